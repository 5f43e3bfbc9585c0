"""A BERT made from its config, with random weights: the shape of a real one, small enough to build in
seconds. For a trained model, return `BertModel.from_pretrained(folder)` on files you have."""
import torch
from transformers import BertConfig, BertModel


def build(layers: int = 2, hidden: int = 64) -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=1000, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=512)
    return BertModel(config)
