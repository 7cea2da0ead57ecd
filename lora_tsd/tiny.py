"""Tiny random-init models and an in-process tokenizer: for tests and the smoke config, no downloads."""
from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>"]

# A fixed corpus so the trained vocabulary is the same on every machine.
_CORPUS = [
    "Question: Which of these is a mammal? Answer: a whale",
    "The quick brown fox jumps over the lazy dog.",
    "Plants need sunlight, water and air to grow.",
    "Rocks are made of minerals; the earth has layers.",
    "true false solution1 solution2 answer1 answer2 answer3 answer4 answer5",
    "ending1 ending2 ending3 ending4 option1 option2",
    "Please answer the following question with the correct choice.",
    "Below is an instruction that describes a task. ### Instruction: ### Response:",
    "the correct answer is. Your entire response should be in English, in all lowercase letters.",
    "the movie was wonderful and moving; the plot was dull and the acting was terrible.",
    "A student measures the temperature of water every minute.",
    "Energy from the sun is converted into chemical energy by photosynthesis.",
]


def make_tokenizer(vocab_size: int = 1000) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on a fixed corpus: encodes any text, vocabulary <= vocab_size."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


def make_llama(
    vocab_size: int = 1000,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 128,
    seed: int = 0,
    initializer_range: float = 0.2,
) -> LlamaForCausalLM:
    """A random-init Llama with the module names of real Llama checkpoints (q_proj, up_proj, ...).
    The wide init lets the frozen head express confident predictions, so a small adapter can
    visibly lower the loss."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        initializer_range=initializer_range,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def make_bert(vocab_size: int = 1000, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
              intermediate_size: int = 128, seed: int = 0) -> BertModel:
    """A random-init BERT encoder with real BERT module names (query, intermediate.dense, ...);
    saved, it loads with AutoModelForSequenceClassification like all-MiniLM-L6-v2."""
    config = BertConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                        num_attention_heads=num_heads, intermediate_size=intermediate_size,
                        max_position_embeddings=512, pad_token_id=0)
    torch.manual_seed(seed)
    return BertModel(config).eval()
