// Parses a Mermaid diagram from stdin with Mermaid itself; prints its type and node / edge counts.
import { JSDOM } from "jsdom";

const dom = new JSDOM("<!DOCTYPE html><body></body>");
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import("mermaid");

let text = "";
for await (const chunk of process.stdin) text += chunk;
try {
  const parsed = await mermaid.parse(text);
  const db = (await mermaid.mermaidAPI.getDiagramFromText(text)).db;
  console.log(JSON.stringify({ type: parsed.diagramType, nodes: db.getVertices().size, edges: db.getEdges().length }));
} catch (error) {
  console.error(String(error));
  process.exit(1);
}
