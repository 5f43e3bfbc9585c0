"""The model zoo of bench/corpus.py: models made by libraries' own code with random weights, each as a
recipe that leaves exporter and opset at trtbuild's defaults.

`prepare(entry, dir)` writes what the recipe needs into dir (a Python module, a .keras file, a
SavedModel) in a process of its own and returns the recipe. `python bench/zoo.py NAME DIR` is that
process.

Needs the zoo extra: pip install -e '.[all,zoo]' -c constraints.txt
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ENGINE = {"backend": "tensorrt-rtx", "optimization_level": 0}


@dataclass(frozen=True)
class Entry:
    name: str
    library: str
    description: str
    make: Callable[[Path], dict]  # writes files into the directory, returns the recipe


def image(batch: tuple[int, int, int], size: int, channels_last: bool = False) -> dict:
    def shape(n):
        return [n, size, size, 3] if channels_last else [n, 3, size, size]

    return {"min": shape(batch[0]), "opt": shape(batch[1]), "max": shape(batch[2])}


def torchvision_entry(name: str, module: str, size: int, batch=(1, 2, 4), **kwargs) -> Entry:
    def make(_: Path) -> dict:
        return {"name": name, "source": {"framework": "pytorch", "entrypoint": f"{module}:{name}",
                                         "kwargs": {"weights": None, **kwargs}},
                "inputs": {"input": image(batch, size)}, "engine": ENGINE}

    dims = "dynamic batch 1..4" if batch[0] != batch[2] else f"batch {batch[0]}"
    return Entry(name, "torchvision", f"{module}.{name}, {size}x{size}, {dims}", make)


def timm_entry(name: str, size: int) -> Entry:
    def make(_: Path) -> dict:
        return {"name": f"timm_{name}", "source": {"framework": "pytorch", "entrypoint": "timm:create_model",
                                                   "args": [name], "kwargs": {"pretrained": False}},
                "inputs": {"input": image((1, 2, 4), size)}, "engine": ENGINE}

    return Entry(f"timm_{name}", "timm", f"timm.create_model({name!r}, pretrained=False), {size}x{size}, "
                 "dynamic batch 1..4", make)


HF_MODULE = '''"""Small Hugging Face models built from their Config, random weights."""
import torch
import transformers


class Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        config = transformers.BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=128, max_position_embeddings=128)
        self.model = transformers.BertModel(config)

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class Decoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        config = transformers.GPT2Config(vocab_size=1000, n_positions=128, n_embd=64, n_layer=2, n_head=2,
                                         use_cache=False)
        self.model = transformers.GPT2LMHeadModel(config)

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def bert():
    torch.manual_seed(0)
    return Encoder().eval()


def gpt2():
    torch.manual_seed(0)
    return Decoder().eval()
'''


def transformers_entry(name: str, description: str) -> Entry:
    def make(work: Path) -> dict:
        (work / "hf_models.py").write_text(HF_MODULE)
        tokens = {"dtype": "int64", "min": [1, 4], "opt": [2, 16], "max": [4, 64]}
        return {"name": f"hf_{name}", "source": {"framework": "pytorch", "entrypoint": f"hf_models:{name}",
                                                 "python_path": ["."]},
                "inputs": {"input_ids": tokens, "attention_mask": dict(tokens)}, "engine": ENGINE}

    return Entry(f"hf_{name}", "transformers", description + "; input_ids, attention_mask int64, batch 1..4, "
                 "sequence 4..64", make)


def keras_entry(name: str, size: int) -> Entry:
    def make(work: Path) -> dict:
        import keras

        keras.utils.set_random_seed(0)
        model = getattr(keras.applications, name)(input_shape=(size, size, 3), weights=None)
        path = work / f"{name}.keras"
        model.save(path)
        return {"name": f"keras_{name}", "source": {"framework": "keras", "path": path.name},
                "inputs": {model.layers[0].name: image((1, 1, 4), size, channels_last=True)}, "engine": ENGINE}

    return Entry(f"keras_{name}", "keras", f"keras.applications.{name}(weights=None), {size}x{size} NHWC, "
                 "dynamic batch 1..4, .keras", make)


def make_saved_model(work: Path) -> dict:
    import tensorflow as tf

    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            rng = tf.random.Generator.from_seed(0)
            self.conv1 = tf.Variable(rng.normal([3, 3, 3, 16]) * 0.2)
            self.conv2 = tf.Variable(rng.normal([3, 3, 16, 32]) * 0.1)
            self.dense = tf.Variable(rng.normal([32, 10]) * 0.1)
            self.bias = tf.Variable(tf.zeros([10]))

        @tf.function(input_signature=[tf.TensorSpec([None, 64, 64, 3], tf.float32, name="image")])
        def __call__(self, image):
            y = tf.nn.relu(tf.nn.conv2d(image, self.conv1, 1, "SAME"))
            y = tf.nn.max_pool2d(y, 2, 2, "VALID")
            y = tf.nn.relu(tf.nn.conv2d(y, self.conv2, 2, "SAME"))
            y = tf.reduce_mean(y, axis=[1, 2])
            return {"logits": tf.nn.softmax(tf.matmul(y, self.dense) + self.bias)}

    net = Net()
    tf.saved_model.save(net, str(work / "saved_model"), signatures={"serving_default": net.__call__})
    return {"name": "tf_saved_model", "source": {"framework": "tensorflow", "path": "saved_model"},
            "inputs": {"image": image((1, 2, 4), 64, channels_last=True)}, "engine": ENGINE}


ENTRIES = [
    torchvision_entry("resnet18", "torchvision.models", 224),
    torchvision_entry("mobilenet_v3_small", "torchvision.models", 224),
    torchvision_entry("efficientnet_b0", "torchvision.models", 224),
    torchvision_entry("vit_b_16", "torchvision.models", 224),
    torchvision_entry("deeplabv3_mobilenet_v3_large", "torchvision.models.segmentation", 256, (1, 1, 1),
                      weights_backbone=None),
    torchvision_entry("lraspp_mobilenet_v3_large", "torchvision.models.segmentation", 256, (1, 1, 1),
                      weights_backbone=None),
    torchvision_entry("fcn_resnet50", "torchvision.models.segmentation", 256, (1, 1, 1), weights_backbone=None),
    timm_entry("convnext_atto", 224),
    timm_entry("mobilenetv3_small_100", 224),
    timm_entry("vit_tiny_patch16_224", 224),
    transformers_entry("bert", "BertModel(BertConfig(hidden 64, 2 layers, 2 heads, vocab 1000)), last_hidden_state"),
    transformers_entry("gpt2", "GPT2LMHeadModel(GPT2Config(n_embd 64, 2 layers, 2 heads, vocab 1000), use_cache=False), "
                       "logits"),
    keras_entry("MobileNetV3Small", 96),
    keras_entry("ResNet50", 64),
    Entry("tf_saved_model", "tensorflow", "tf.Module with a tf.function signature (conv, pool, dense, softmax), "
          "64x64 NHWC, dynamic batch 1..4, tf.saved_model.save", make_saved_model),
]
BY_NAME = {e.name: e for e in ENTRIES}


def prepare(entry: Entry, work: Path, timeout: float = 600) -> dict:
    """Runs entry.make(work) in a process of its own; returns {"recipe": ..., "seconds": ...} or {"error": ...}."""
    work.mkdir(parents=True, exist_ok=True)
    out = work / "prepared.json"
    out.unlink(missing_ok=True)
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, str(Path(__file__)), entry.name, str(work)], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"making the model timed out after {timeout:.0f} s"}
    seconds = round(time.perf_counter() - started, 1)
    if done.returncode != 0 or not out.exists():
        tail = [line for line in done.stderr.splitlines() if line.strip()][-3:]
        return {"error": "making the model failed: " + " | ".join(tail), "seconds": seconds}
    return {"recipe": json.loads(out.read_text()), "seconds": seconds}


if __name__ == "__main__":
    name, work = sys.argv[1], Path(sys.argv[2])
    recipe = BY_NAME[name].make(work)
    (work / "prepared.json").write_text(json.dumps(recipe))
