"""What a hand-written TensorRT-RTX build script does, run by bench/corpus.py in a process of its own:
    python bench/plain_build.py MODEL.onnx '{"input": [min, opt, max]}'
prints "@@RESULT {json}" (parsed, built, parser / logger errors, I/O of the network)."""
import json, sys, time
import tensorrt_rtx as trt

path, ranges = sys.argv[1], json.loads(sys.argv[2])
res = {"parsed": False, "built": False, "parser_errors": [], "log_errors": []}

class Logger(trt.ILogger):
    def __init__(self):
        trt.ILogger.__init__(self)
    def log(self, severity, msg):
        if severity <= trt.ILogger.Severity.ERROR:
            res["log_errors"].append(msg)

def tensors(get, n):
    return [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype.name,
             "shape_tensor": bool(t.is_shape_tensor)} for t in (get(i) for i in range(n))]

started = time.perf_counter()
logger = Logger()
builder = trt.Builder(logger)
network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
parser = trt.OnnxParser(network, logger)
res["parsed"] = bool(parser.parse_from_file(path))
for i in range(parser.num_errors):
    e = parser.get_error(i)
    res["parser_errors"].append(f"node {e.node_name()!r} ({e.node_operator()}): {e.code().name}: {e.desc().strip()}")
res["inputs"] = tensors(network.get_input, network.num_inputs)
res["outputs"] = tensors(network.get_output, network.num_outputs)
if res["parsed"]:
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    config.builder_optimization_level = 0
    dynamic = [network.get_input(i) for i in range(network.num_inputs) if -1 in tuple(network.get_input(i).shape)]
    if dynamic:
        profile = builder.create_optimization_profile()
        for t in dynamic:
            shape = list(t.shape)
            r = ranges.get(t.name) or {"min": [1 if d == -1 else d for d in shape],
                                       "opt": [1 if d == -1 else d for d in shape],
                                       "max": [4 if d == -1 else d for d in shape]}
            profile.set_shape(t.name, r["min"], r["opt"], r["max"])
        config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    res["built"] = plan is not None
    res["plan_bytes"] = plan.nbytes if plan is not None else None
res["seconds"] = round(time.perf_counter() - started, 3)
print("@@RESULT " + json.dumps(res), flush=True)
