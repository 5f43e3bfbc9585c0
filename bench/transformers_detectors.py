"""Transformers and detectors built from their library configs, each in fp32, fp16 and int8.

    python bench/transformers_detectors.py [--only bert,t5]

Hugging Face BERT, T5 encoder, Llama, GPT-2, ViT and Whisper encoder (small configs, random weights),
a torchvision detector (Faster R-CNN, MobileNetV3 FPN, no weights) and YOLOv8n from ultralytics'
yolov8n.yaml without and with NMS (torchvision's batched_nms after the head). Nothing is downloaded.
One cache: the three precisions of a model share its export. Prints one row per model and precision:
what happened (built, or the step that failed and its first line), the accuracy gate's relative L2
error against fp32 on ONNX Runtime, and the seconds of the steps that ran (export counted once, in fp32).
Random weights and random calibration data: the figures show what builds, not trained accuracy.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from common import compile_bytecode

MODELS_PY = '''
"""Models from library configs, random weights (torch.manual_seed(0))."""
import torch
import transformers as T


class Hidden(torch.nn.Module):
    def __init__(self, model, field="last_hidden_state"):
        super().__init__()
        self.model, self.field = model, field

    def forward(self, input_ids, attention_mask):
        return getattr(self.model(input_ids=input_ids, attention_mask=attention_mask), self.field)


def bert():
    torch.manual_seed(0)
    return Hidden(T.BertModel(T.BertConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                                           intermediate_size=256, max_position_embeddings=128))).eval()


def t5():
    torch.manual_seed(0)
    return Hidden(T.T5EncoderModel(T.T5Config(vocab_size=1000, d_model=128, d_kv=32, d_ff=256, num_layers=2,
                                              num_heads=4))).eval()


def llama():
    torch.manual_seed(0)
    return Hidden(T.LlamaModel(T.LlamaConfig(vocab_size=1000, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2,
                                             max_position_embeddings=128))).eval()


def gpt2():
    torch.manual_seed(0)
    return Hidden(T.GPT2LMHeadModel(T.GPT2Config(vocab_size=1000, n_positions=128, n_embd=128, n_layer=2, n_head=4,
                                                 use_cache=False)), "logits").eval()


class Pixels(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model(pixel_values=pixel_values).last_hidden_state


def vit():
    torch.manual_seed(0)
    return Pixels(T.ViTModel(T.ViTConfig(image_size=64, patch_size=16, hidden_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, intermediate_size=256), add_pooling_layer=False)).eval()


class Features(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_features):
        return self.model(input_features=input_features).last_hidden_state


def whisper():
    torch.manual_seed(0)
    config = T.WhisperConfig(num_mel_bins=80, d_model=128, encoder_layers=2, encoder_attention_heads=4,
                             encoder_ffn_dim=256, decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=256,
                             max_source_positions=100)
    return Features(T.WhisperModel(config).get_encoder()).eval()


class Detections(torch.nn.Module):
    """torchvision's detector on one image, as tensors."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        found = self.model(list(image))[0]
        return found["boxes"], found["scores"], found["labels"]


def fasterrcnn():
    import torchvision

    torch.manual_seed(0)
    return Detections(torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=3)).eval()


class Yolo(torch.nn.Module):
    """YOLOv8n's head as ultralytics exports it (boxes xywh + class scores), optionally with NMS."""

    def __init__(self, nms):
        super().__init__()
        from ultralytics.nn.tasks import DetectionModel

        self.model = DetectionModel("yolov8n.yaml", nc=80, verbose=False).eval()
        head = self.model.model[-1]
        head.export, head.format = True, "onnx"
        self.nms = nms

    def forward(self, images):
        predictions = self.model(images)  # [N, 84, anchors]
        if not self.nms:
            return predictions
        import torchvision

        boxes_xywh, scores = predictions[0, :4].T, predictions[0, 4:].T
        best, labels = scores.max(1)
        xy, wh = boxes_xywh[:, :2], boxes_xywh[:, 2:]
        boxes = torch.cat([xy - wh / 2, xy + wh / 2], 1)
        keep = torchvision.ops.batched_nms(boxes, best, labels, 0.45)[:100]
        return boxes[keep], best[keep], labels[keep]


def yolov8():
    torch.manual_seed(0)
    return Yolo(nms=False)


def yolov8_nms():
    torch.manual_seed(0)
    return Yolo(nms=True)
'''

TOKENS = {"dtype": "int64", "min": [1, 8], "opt": [2, 32], "max": [4, 64]}
CORPUS = {  # name: (inputs, calibration arrays per shard)
    "bert": ({"input_ids": TOKENS, "attention_mask": TOKENS}, "tokens"),
    "t5": ({"input_ids": TOKENS, "attention_mask": TOKENS}, "tokens"),
    "llama": ({"input_ids": TOKENS, "attention_mask": TOKENS}, "tokens"),
    "gpt2": ({"input_ids": TOKENS, "attention_mask": TOKENS}, "tokens"),
    "vit": ({"pixel_values": {"min": [1, 3, 64, 64], "opt": [2, 3, 64, 64], "max": [4, 3, 64, 64]}}, "images"),
    "whisper": ({"input_features": {"shape": [1, 80, 200]}}, "features"),
    "fasterrcnn": ({"image": {"shape": [1, 3, 320, 320]}}, "detector"),
    "yolov8": ({"images": {"shape": [1, 3, 320, 320]}}, "detector"),
    "yolov8_nms": ({"images": {"shape": [1, 3, 320, 320]}}, "detector"),
}
NEEDS = {"fasterrcnn": "torchvision", "yolov8": "ultralytics", "yolov8_nms": "ultralytics"}
# Rows also built without the gates (parity off, accuracy limit 1e9): does the engine step take the graph?
UNGATED = ("fasterrcnn", "yolov8_nms")
SHARDS = 8


def calibration(folder: Path, kind: str, image_input: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(SHARDS):
        if kind == "tokens":
            arrays = {"input_ids": rng.integers(0, 1000, (2, 32)), "attention_mask": np.ones((2, 32), np.int64)}
        elif kind == "images":
            arrays = {"pixel_values": rng.standard_normal((2, 3, 64, 64)).astype(np.float32)}
        elif kind == "features":
            arrays = {"input_features": rng.standard_normal((1, 80, 200)).astype(np.float32)}
        else:
            arrays = {image_input: rng.uniform(0, 1, (1, 3, 320, 320)).astype(np.float32)}
        np.savez(folder / f"shard{i}.npz", **arrays)


def recipe(name: str, precision: str, work: Path, gated: bool = True) -> Path:
    inputs, kind = CORPUS[name]
    data = {"name": f"{name}_{precision}" + ("" if gated else "_ungated"), "source": {"framework": "pytorch", "entrypoint": f"corpus_models:{name}"},
            "inputs": inputs, "engine": {"backend": "tensorrt-rtx", "precision": precision, "optimization_level": 0,
                                         "workspace": "2GiB"}}
    if precision in ("int8", "fp8"):
        calibration(work / "calib" / name, kind, next(iter(inputs)))
        data["precision"] = {"calibration": {"data": f"calib/{name}/*.npz"}}
    if not gated:
        data["parity"] = {"enabled": False}
        data.setdefault("precision", {})["max_relative_error"] = 1e9
    path = work / f"{data['name']}.yaml"
    path.write_text(json.dumps(data))
    return path


def outcome(steps: list[dict]) -> str:
    """built, or the step that failed and the line of its error that says why."""
    failed = next((s for s in steps if s["status"] == "failed"), None)
    if failed:
        lines = [line.strip() for line in (failed.get("error") or "").splitlines() if line.strip()]
        why = next((line for line in lines if "!=" in line or "FAIL" in line or line.startswith("node '")),
                   lines[0] if lines else "")
        return f"failed at {failed['step']}: " + " ".join(why.split())[:100]
    return "built" if any(s["step"] == "engine" and s["status"] in ("built", "cached") for s in steps) else "not built"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("--precisions", default="fp32,fp16,int8")
    args = parser.parse_args()
    compile_bytecode()
    names = [n for n in (args.only.split(",") if args.only else CORPUS) if importlib.util.find_spec(NEEDS.get(n, "torch"))]
    work = Path(tempfile.mkdtemp(prefix="trtbuild-corpus-"))
    (work / "corpus_models.py").write_text(MODELS_PY)
    rows = []
    try:
        for name, gated in [(n, True) for n in names] + [(n, False) for n in names if n in UNGATED]:
            for precision in args.precisions.split(","):
                report = work / "report.json"
                subprocess.run([sys.executable, "-m", "trtbuild", str(recipe(name, precision, work, gated)), "--cache-dir",
                                str(work / "cache"), "--report", str(report), "--quiet"], cwd=work,
                               env={**__import__("os").environ, "YOLO_OFFLINE": "1"})
                steps = json.loads(report.read_text())["steps"]
                gate = next((s for s in steps if s["step"] == "accuracy"), {}).get("meta", {}).get("accuracy", {})
                errors = [r["rel_l2"] for r in gate.get("outputs", []) if r.get("rel_l2") is not None]
                seconds = sum(s.get("seconds") or 0 for s in steps if s["status"] in ("built", "failed"))
                warnings = [w for s in steps for w in (s.get("meta") or {}).get("warnings", [])
                            if "parity proves nothing" in w or "symbolic shape" in w]
                rows.append((name + ("" if gated else " (no gates)"), precision, outcome(steps), max(errors) if errors else None, seconds, len(warnings)))
                print(*rows[-1], sep="\t", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print("| model | precision | result | gate rel L2 | seconds | warnings |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, precision, result, error, seconds, warnings in rows:
        print(f"| {name} | {precision} | {result} | {f'{error:.1e}' if error is not None else '-'} | {seconds:.1f} | "
              f"{warnings or ''} |")


if __name__ == "__main__":
    main()
