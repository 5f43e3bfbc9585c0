"""The models of bench/hidden_zoo.py: what each recipe's source and inputs are, the calibration data made
for them, and the two sources made before the build (a Keras application saved as .keras, YOLO11 exported
to ONNX by ultralytics), each in a process of its own: `python bench/hidden_zoo_entries.py NAME DIR`."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
VOCAB = 1000  # hidden_zoo_models.VOCAB, without importing torch here


@dataclass(frozen=True)
class Entry:
    name: str
    family: str
    description: str
    inputs: dict  # the recipe's inputs (prepared entries: filled in by their process)
    source: dict = field(default_factory=dict)  # the recipe's source (prepared entries: filled in by their process)
    precisions: tuple = ("fp32", "fp16", "int8")
    expect: str = "builds"  # or what the row shows instead: "refused at export"


def ranged(lo: list[int], opt: list[int], hi: list[int], dtype: str | None = None) -> dict:
    return {**({"dtype": dtype} if dtype else {}), "min": lo, "opt": opt, "max": hi}


TOKENS = ranged([1, 8], [2, 16], [4, 32], "int64")  # calibration (below) covers 8..32
TEXT = {"input_ids": TOKENS, "attention_mask": TOKENS}


def image(size: int, channels_last: bool = False, batch=(1, 2, 4)) -> dict:
    shape = (lambda n: [n, size, size, 3]) if channels_last else (lambda n: [n, 3, size, size])
    return ranged(shape(batch[0]), shape(batch[1]), shape(batch[2]))


def torch_source(function: str) -> dict:
    return {"framework": "pytorch", "entrypoint": f"hidden_zoo_models:{function}"}


def timm(name: str, size: int) -> Entry:
    return Entry(f"timm_{name}", "timm", f"timm.create_model({name!r}, pretrained=False), {size}x{size}, batch 1..4",
                 {"input": image(size)}, {"framework": "pytorch", "entrypoint": "timm:create_model", "args": [name],
                                          "kwargs": {"pretrained": False}})


def decode_step(opt_length: int) -> dict:
    # [layers, batch, kv heads, past length, head dim] as hidden_zoo_models.QWEN2
    cache = ranged([2, 1, 2, 1, 16], [2, 2, 2, 8, 16], [2, 4, 2, 32, 16])
    return {"input_ids": ranged([1, 1], [2, opt_length], [4, 16], "int64"), "past_keys": cache, "past_values": cache}


ENTRIES = [
    Entry("hf_bert", "HF encoder", "BertModel(BertConfig(hidden 64, 2 layers)), last_hidden_state; tokens batch 1..4 "
          "x sequence 8..32", TEXT, torch_source("bert")),
    Entry("hf_gpt2", "HF causal LM", "GPT2LMHeadModel(GPT2Config(n_embd 64, 2 layers), use_cache=False), logits",
          TEXT, torch_source("gpt2")),
    Entry("hf_llama", "HF causal LM", "LlamaForCausalLM(LlamaConfig(hidden 64, 2 layers, GQA 4/2)), logits; int8 "
          "calibrated at sequence 8, 16 and 32 (the whole profile)", TEXT, torch_source("llama")),
    Entry("hf_qwen2_decode_opt1", "HF KV-cache decoder", "Qwen2ForCausalLM decode step over a DynamicCache (past "
          "1..32), input_ids [-1, -1] opt [2, 1]: the case that built a wrong engine", decode_step(1),
          torch_source("qwen2_decode"), ("fp32",), "refused at export"),
    Entry("hf_qwen2_decode", "HF KV-cache decoder", "the same decode step, input_ids opt [2, 4] (1..16 new tokens)",
          decode_step(4), torch_source("qwen2_decode")),
    Entry("hf_whisper_encoder", "HF audio encoder", "WhisperEncoder(WhisperConfig(d_model 64, 2 layers)), 80 mel x "
          "200 frames, batch 1..4", {"input_features": ranged([1, 80, 200], [2, 80, 200], [4, 80, 200])},
          torch_source("whisper")),
    Entry("hf_vit", "HF vision", "ViTModel(ViTConfig(64x64, patch 16, hidden 64)), last_hidden_state",
          {"pixel_values": image(64)}, torch_source("vit")),
    Entry("hf_clip", "HF vision-language", "CLIPModel (text and vision towers, hidden 64), source.outputs "
          "[logits_per_image, text_embeds, image_embeds] of its 6-field output",
          {**TEXT, "pixel_values": image(64)},
          {**torch_source("clip"), "outputs": ["logits_per_image", "text_embeds", "image_embeds"]}),
    timm("convnext_atto", 128),
    timm("efficientnet_b0", 128),
    timm("vit_tiny_patch16_224", 224),
    Entry("tv_retinanet_head", "torchvision detector", "retinanet_resnet50_fpn(weights=None, 8 classes): backbone + "
          "head, no post-processing (no NonZero / NMS), 256x256, batch 1..2", {"image": image(256, batch=(1, 1, 2))},
          torch_source("retinanet")),
    Entry("tv_fcos_head", "torchvision detector", "fcos_resnet50_fpn(weights=None, 8 classes): backbone + head, no "
          "post-processing, 256x256, batch 1..2", {"image": image(256, batch=(1, 1, 2))}, torch_source("fcos")),
    Entry("keras_MobileNetV2", "Keras application", "keras.applications.MobileNetV2(weights=None, "
          "classifier_activation=None), 96x96 NHWC, batch 1..4, .keras", {}),
    Entry("keras_ConvNeXtTiny", "Keras application", "keras.applications.ConvNeXtTiny(weights=None, "
          "classifier_activation=None), 64x64 NHWC, batch 1..4, .keras", {}),
    Entry("yolo11n", "ultralytics ONNX", "YOLO('yolo11n.yaml') (random weights) exported by ultralytics "
          "(format=onnx, dynamic=True, simplify=False), 320x320, batch 1..4; an onnx source", {}),
]
BY_NAME = {e.name: e for e in ENTRIES}
PREPARED = ("keras_", "yolo")


# ---------------------------------------------------------------------------------------- calibration

def calibration(inputs: dict, folder: Path, shards: int = 6) -> str:
    """Random shards at min, opt and max in turn (so they cover every profile dim); token ids below VOCAB,
    masks of ones, floats normal. Returns the recipe's glob."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(shards):
        arrays = {}
        for name, spec in inputs.items():
            shape = spec.get("shape") or spec[("min", "opt", "max")[i % 3]]
            if spec.get("dtype") == "int64":
                arrays[name] = (np.ones(shape, np.int64) if "mask" in name else rng.integers(0, VOCAB, shape))
            else:  # normal, as the accuracy gate's random inputs are: data it exceeds would be clipped
                arrays[name] = rng.standard_normal(shape).astype(np.float32)
        np.savez(folder / f"shard{i}.npz", **arrays)
    return f"{folder.name}/*.npz"


# ---------------------------------------------------------------------------------------- prepared sources

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False",
           # anything that still tries the network fails at once instead of fetching
           "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}


def make_keras(name: str, work: Path) -> dict:
    import keras

    application, size = name.removeprefix("keras_"), {"keras_MobileNetV2": 96, "keras_ConvNeXtTiny": 64}[name]
    keras.utils.set_random_seed(0)
    # logits: the softmax of an untrained classifier is 1/1000 everywhere, and the gates would compare nothing
    model = getattr(keras.applications, application)(input_shape=(size, size, 3), weights=None,
                                                     classifier_activation=None)
    model.save(work / f"{application}.keras")
    return {"source": {"framework": "keras", "path": f"{application}.keras"},
            "inputs": {model.layers[0].name: image(size, channels_last=True)}}


def make_yolo(work: Path) -> dict:
    os.environ["YOLO_CONFIG_DIR"] = str(work / "ultralytics-settings")
    os.chdir(work)
    from ultralytics import YOLO

    model = YOLO("yolo11n.yaml")  # the architecture from its yaml, random weights: no .pt is fetched
    path = Path(model.export(format="onnx", imgsz=320, dynamic=True, simplify=False, device="cpu"))
    return {"source": {"framework": "onnx", "path": path.name}, "inputs": {"images": image(320)}}


if __name__ == "__main__":
    name, work = sys.argv[1], Path(sys.argv[2]).resolve()
    work.mkdir(parents=True, exist_ok=True)
    made = make_yolo(work) if name == "yolo11n" else make_keras(name, work)
    (work / "prepared.json").write_text(json.dumps(made))
