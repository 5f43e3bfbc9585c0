"""The PyTorch models of bench/hidden_zoo.py: library architectures built from their configs with random
weights (torch.manual_seed(0)); nothing is downloaded. Each function returns an nn.Module in eval mode,
named by a recipe's `source.entrypoint` (`hidden_zoo_models:bert`)."""

from __future__ import annotations

import torch
import transformers as T

VOCAB = 1000  # every text config's vocabulary: token data is drawn below it


class Field(torch.nn.Module):
    """One field of a Hugging Face model's output, from input_ids and attention_mask."""

    def __init__(self, model, field):
        super().__init__()
        self.model, self.field = model, field

    def forward(self, input_ids, attention_mask):
        return getattr(self.model(input_ids=input_ids, attention_mask=attention_mask), self.field)


def bert():
    torch.manual_seed(0)
    config = T.BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=128, max_position_embeddings=128)
    return Field(T.BertModel(config), "last_hidden_state").eval()


def gpt2():
    torch.manual_seed(0)
    config = T.GPT2Config(vocab_size=VOCAB, n_positions=128, n_embd=64, n_layer=2, n_head=2, use_cache=False)
    return Field(T.GPT2LMHeadModel(config), "logits").eval()


def llama():
    torch.manual_seed(0)
    config = T.LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, use_cache=False)
    return Field(T.LlamaForCausalLM(config), "logits").eval()


class DecodeStep(torch.nn.Module):
    """One step of a causal LM over a KV cache: new tokens and the past keys / values of every layer
    ([layers, batch, kv heads, past length, head dim]) in; logits and the grown cache out."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, past_keys, past_values):
        cache = T.DynamicCache(ddp_cache_data=list(zip(past_keys.unbind(0), past_values.unbind(0))))
        past = past_keys.shape[3]
        positions = torch.arange(past, past + input_ids.shape[1]).unsqueeze(0).expand(input_ids.shape[0], -1)
        out = self.model(input_ids=input_ids, cache=cache, position_ids=positions, use_cache=True)
        layers = cache.layers
        return (out.logits, torch.stack([layer.keys for layer in layers]),
                torch.stack([layer.values for layer in layers]))


QWEN2 = {"layers": 2, "kv_heads": 2, "head_dim": 16}  # the cache's dims, for the recipe


def qwen2_decode():
    torch.manual_seed(0)
    config = T.Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=QWEN2["layers"],
                           num_attention_heads=4, num_key_value_heads=QWEN2["kv_heads"], max_position_embeddings=128)
    return DecodeStep(T.Qwen2ForCausalLM(config)).eval()


class Encoder(torch.nn.Module):
    """last_hidden_state of an encoder taking one tensor by keyword."""

    def __init__(self, model, keyword):
        super().__init__()
        self.model, self.keyword = model, keyword

    def forward(self, x):
        return self.model(**{self.keyword: x}).last_hidden_state


def whisper():
    torch.manual_seed(0)
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    config = T.WhisperConfig(num_mel_bins=80, d_model=64, encoder_layers=2, encoder_attention_heads=2,
                             encoder_ffn_dim=128, max_source_positions=100)  # 200 input frames
    return Encoder(WhisperEncoder(config), "input_features").eval()


def vit():
    torch.manual_seed(0)
    config = T.ViTConfig(image_size=64, patch_size=16, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=128)
    return Encoder(T.ViTModel(config, add_pooling_layer=False), "pixel_values").eval()


class Clip(torch.nn.Module):
    """CLIPModel's whole output (a ModelOutput of logits, embeddings and both towers' outputs)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, pixel_values):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)


def clip():
    torch.manual_seed(0)
    text = {"vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 64}
    vision = {"image_size": 64, "patch_size": 16, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 2}
    return Clip(T.CLIPModel(T.CLIPConfig(text_config=text, vision_config=vision, projection_dim=32))).eval()


class DetectorHead(torch.nn.Module):
    """A torchvision one-stage detector without its post-processing: backbone (ResNet + FPN) and head,
    the raw per-anchor class logits and box regressions (and FCOS's centerness)."""

    def __init__(self, model):
        super().__init__()
        self.backbone, self.head = model.backbone, model.head

    def forward(self, image):
        return self.head(list(self.backbone(image).values()))


def retinanet():
    import torchvision

    torch.manual_seed(0)
    return DetectorHead(torchvision.models.detection.retinanet_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=8)).eval()


def fcos():
    import torchvision

    torch.manual_seed(0)
    return DetectorHead(torchvision.models.detection.fcos_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=8)).eval()
