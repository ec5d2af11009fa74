"""What the rollout engine tests share: chat prompts of different shapes, and a copy of a model
whose output layer is biased towards EOS (to exercise early stops)."""

import copy

import torch

PROMPTS = [
    [{"role": "user", "content": "Use the numbers 3, 5, 7 to make 15."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
    [{"role": "user", "content": "Write a Python function f(x) that returns x plus 2."}],
]


def eos_biased(model, tokenizer, bias: float):
    """A deep copy of ``model`` with an untied output layer (the embedding's weights) whose bias
    adds ``bias`` to the EOS logit."""
    m = copy.deepcopy(model)
    head = torch.nn.Linear(m.config.hidden_size, m.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.copy_(m.get_input_embeddings().weight)
        head.bias.zero_()
        head.bias[tokenizer.eos_token_id] = bias
    m.lm_head = head
    return m
