import pytest
import torch
from peft import PeftModel

from lora_tsd.data import encoding
from lora_tsd.data.holdout import holdout
from lora_tsd.methods import registry
from lora_tsd.tiny import make_llama
from lora_tsd.training import loop

TARGETS = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]


def _attach(model, cfg, rank=4):
    return registry.attach("lora", model, rank, cfg, TARGETS)


def _ids(tokenizer):
    return tokenizer(["Question: the sky is red. Which colour?\nAnswer: red"], return_tensors="pt")["input_ids"]


def test_lora_trainable_parameter_count_matches_formula(tiny_model, train_cfg):
    rank = 4
    expected = 0
    for name, mod in tiny_model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.split(".")[-1] in TARGETS:
            expected += rank * (mod.in_features + mod.out_features)
    model = _attach(tiny_model, train_cfg, rank)
    assert registry.trainable_parameters(model) == expected
    assert expected == 2 * rank * ((64 + 64) * 3 + (64 + 128) + (128 + 64))


def test_lora_leaves_output_unchanged_at_init(tiny_model, train_cfg, tokenizer):
    ids = _ids(tokenizer)
    with torch.no_grad():
        before = tiny_model(ids).logits.clone()
        after = _attach(tiny_model, train_cfg).eval()(ids).logits
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_training_reduces_loss(tiny_model, train_cfg, tokenizer, examples):
    model = _attach(tiny_model, train_cfg)
    log = loop.fit(model, tokenizer, examples, train_cfg, seed=0)
    first, last = sum(log["losses"][:5]) / 5, sum(log["losses"][-5:]) / 5
    assert last < 0.7 * first, (first, last)
    assert log["steps"] == train_cfg["steps"] and log["tokens_per_s"] > 0


def test_batch_order_is_a_pure_function_of_seed_and_step():
    a = [loop.batch_indices(10, 3, seed=1, step=s) for s in range(6)]
    b = [loop.batch_indices(10, 3, seed=1, step=s) for s in range(6)]
    assert a == b
    epoch0 = sum(a[:3], [])
    assert len(set(epoch0)) == 9  # no repeats within an epoch
    assert loop.batch_indices(10, 3, seed=2, step=0) != a[0]


def test_resume_gives_the_same_losses_and_weights(train_cfg, tokenizer, examples, tmp_path):
    cfg = {**train_cfg, "steps": 12, "checkpoint_every": 4}
    straight = _attach(make_llama(vocab_size=1000), cfg)
    full = loop.fit(straight, tokenizer, examples, cfg, seed=3)

    ckpt = tmp_path / "state.pt"
    first = _attach(make_llama(vocab_size=1000), cfg)
    loop.fit(first, tokenizer, examples, cfg, seed=3, ckpt=ckpt, stop_after=6)
    assert ckpt.exists()
    torch.manual_seed(1234)  # the resumed run must not depend on the RNG state it starts with
    second = _attach(make_llama(vocab_size=1000), cfg)
    resumed = loop.fit(second, tokenizer, examples, cfg, seed=3, ckpt=ckpt)
    assert resumed["resumed_from_step"] == 6
    assert resumed["losses"] == pytest.approx(full["losses"], rel=1e-5, abs=1e-6)
    for (n, p), (_, q) in zip(straight.named_parameters(), second.named_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=n)


def test_checkpoint_of_another_config_is_ignored(train_cfg, tokenizer, examples, tmp_path):
    ckpt = tmp_path / "state.pt"
    cfg = {**train_cfg, "steps": 6, "checkpoint_every": 2}
    loop.fit(_attach(make_llama(vocab_size=1000), cfg), tokenizer, examples, cfg, seed=0, ckpt=ckpt, stop_after=2)
    other = {**cfg, "lr": cfg["lr"] / 2}
    log = loop.fit(_attach(make_llama(vocab_size=1000), other), tokenizer, examples, other, seed=0, ckpt=ckpt)
    assert log["resumed_from_step"] == 0 and log["steps"] == 6


def test_merged_unmerged_and_reloaded_adapter_agree(train_cfg, tokenizer, examples, tmp_path):
    cfg = {**train_cfg, "steps": 5}
    model = _attach(make_llama(vocab_size=1000), cfg)
    loop.fit(model, tokenizer, examples, cfg, seed=0)
    ids = _ids(tokenizer)
    with torch.no_grad():
        unmerged = model(ids).logits
        base_logits = make_llama(vocab_size=1000)(ids).logits
    assert not torch.allclose(unmerged, base_logits, atol=1e-4)  # training changed the model
    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(make_llama(vocab_size=1000), str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, unmerged, rtol=1e-5, atol=1e-5)
        merged = reloaded.merge_and_unload()(ids).logits
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-4)


def test_answer_only_head_equals_the_full_loss(tiny_model, train_cfg, tokenizer, examples):
    from lora_tsd.data import encoding

    rows = [encoding.encode_example(tokenizer, ex, 64) for ex in examples[:6]]
    rows[0] = encoding.encode_example(tokenizer, {**examples[0], "query": "A much longer prompt " * 5}, 64)
    with torch.no_grad():
        full = tiny_model(**encoding.collate_causal(rows, tokenizer.pad_token_id, side="right")).loss
        fast = loop.answer_loss(tiny_model, encoding.collate_causal(rows, tokenizer.pad_token_id, side="left"))
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5)


def test_answer_only_head_handles_a_row_cut_to_its_answer(tiny_model, tokenizer):
    from lora_tsd.data import encoding

    long_answer = {"instruction": "Say it.", "input": "", "output": "word " * 40}
    rows = [encoding.encode_example(tokenizer, long_answer, 16),
            encoding.encode_example(tokenizer, {"instruction": "Hi.", "input": "", "output": "ok"}, 16)]
    assert all(label != -100 for label in rows[0]["labels"])  # the prompt was cut away entirely
    with torch.no_grad():
        full = tiny_model(**encoding.collate_causal(rows, tokenizer.pad_token_id, side="right")).loss
        fast = loop.answer_loss(tiny_model, encoding.collate_causal(rows, tokenizer.pad_token_id, side="left"))
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5)


# --- the official recipe's options

def test_micro_batches_accumulate_the_whole_batch_gradient(tokenizer, examples, train_cfg):
    from lora_tsd.data import encoding

    rows = [encoding.encode_example(tokenizer, ex, 64) for ex in examples[:8]]
    rows[1] = encoding.encode_example(tokenizer, {**examples[1], "query": "A far longer prompt " * 4}, 64)
    batch = encoding.collate_causal(rows, tokenizer.pad_token_id, side="left")

    def grads(micro):
        torch.manual_seed(0)
        model = _attach(make_llama(vocab_size=1000), {**train_cfg, "lora_dropout": 0.0})
        with torch.no_grad():  # B starts at 0; give it values so every factor gets a gradient
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.1)
        params = [p for p in model.parameters() if p.requires_grad]
        loss, norm = loop.train_step(model, batch, {"micro_batch_size": micro, "max_grad_norm": None},
                                     params, torch.device("cpu"), None, "causal")
        return loss, norm, [p.grad.clone() for p in params]

    whole = grads(None)
    for micro in (3, 1):  # 1: each row alone, its padding dropped (RoPE sees relative positions only)
        parts = grads(micro)
        assert parts[0] == pytest.approx(whole[0], rel=1e-5) and parts[1] == pytest.approx(whole[1], rel=1e-4)
        for a, b in zip(whole[2], parts[2]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("fmt,side", [("causal", "left"), ("classification", "right")])
def test_micro_batches_group_rows_by_length_and_drop_padding_columns(fmt, side):
    lengths = [3, 7, 2, 5]
    width = max(lengths)
    mask = torch.tensor([[0] * (width - n) + [1] * n if side == "left" else [1] * n + [0] * (width - n)
                         for n in lengths])
    ids = torch.arange(4 * width).reshape(4, width) * mask
    batch = {"input_ids": ids, "attention_mask": mask,
             "labels": torch.where(mask.bool(), ids, -100) if fmt == "causal" else torch.tensor([0, 1, 0, 1])}
    parts = loop.micro_batches(batch, 2, fmt)
    # Longest rows first (7 and 5, then 3 and 2), each slice as wide as its longest row.
    assert [p["input_ids"].shape for p, _ in parts] == [(2, 7), (2, 3)]
    assert [p["attention_mask"].sum(1).tolist() for p, _ in parts] == [[7, 5], [3, 2]]
    # Shares still add up to the whole batch's loss: answer tokens (shifted) or rows.
    # (the shifted loss drops the first column: only the full-width row loses a token)
    expected = [(6 + 5) / 16, (3 + 2) / 16] if fmt == "causal" else [0.5, 0.5]
    assert [share for _, share in parts] == pytest.approx(expected)
    if fmt == "classification":
        assert parts[0][0]["labels"].tolist() == [1, 1]  # per-row labels follow their rows


def test_gradient_clipping_caps_the_global_norm(tokenizer, examples, train_cfg):
    from lora_tsd.data import encoding

    batch = encoding.collate_causal([encoding.encode_example(tokenizer, ex, 64) for ex in examples[:4]], tokenizer.pad_token_id)
    model = _attach(make_llama(vocab_size=1000), train_cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    _, norm = loop.train_step(model, batch, {"max_grad_norm": 1e-4}, params, torch.device("cpu"), None, "causal")
    after = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    assert norm > 1e-4 and float(after) == pytest.approx(1e-4, rel=1e-3)


def test_epochs_set_the_number_of_steps(tokenizer, examples, train_cfg):
    assert loop.total_steps({"epochs": 3, "batch_size": 4}, 24) == 18
    assert loop.total_steps({"epochs": 0.5, "batch_size": 4}, 24) == 3
    assert loop.total_steps({"steps": 7, "batch_size": 4}, 24) == 7
    cfg = {**train_cfg, "epochs": 1, "steps": None}
    log = loop.fit(_attach(make_llama(vocab_size=1000), cfg), tokenizer, examples, cfg, seed=0)
    assert log["steps"] == 6  # 24 examples / batch 4


def test_holdout_is_llm_adapters_train_test_split():
    import datasets

    rows = [{"instruction": f"q{i}", "output": str(i)} for i in range(50)]
    train_rows, val_rows = holdout(rows, 12)
    ref = datasets.Dataset.from_list(rows).train_test_split(test_size=12, shuffle=True, seed=42)
    assert val_rows == ref["test"].to_list() and train_rows == ref["train"].to_list()
    assert holdout(rows, 0) == (rows, [])
    with pytest.raises(ValueError, match="val_size"):
        holdout(rows, 50)


def test_validation_loss_is_recorded_and_the_best_adapter_kept(tokenizer, examples, train_cfg):
    cfg = {**train_cfg, "steps": 12, "eval_every": 3, "keep_best": True, "lr": 5e-2}
    train_rows, val_rows = examples[:18], examples[18:]
    model = _attach(make_llama(vocab_size=1000), cfg)
    log = loop.fit(model, tokenizer, train_rows, cfg, seed=0, val_examples=val_rows)
    assert [s for s, _ in log["val_losses"]] == [3, 6, 9, 12]
    best_step, best_loss = min(log["val_losses"], key=lambda sv: sv[1])
    assert log["kept_step"] == best_step
    again = loop.validation_loss(model, encoding.encode(tokenizer, val_rows, cfg, "causal"), cfg,
                                 tokenizer.pad_token_id, torch.device("cpu"), None, "causal")
    assert again == pytest.approx(best_loss, rel=1e-5)  # the model now is the best one


# --- faults: corrupt state is set aside and the work redone

def test_a_truncated_checkpoint_is_set_aside_and_training_starts_over(train_cfg, tokenizer, examples, tmp_path,
                                                                      capsys):
    cfg = {**train_cfg, "steps": 6, "checkpoint_every": 2}
    straight = loop.fit(_attach(make_llama(vocab_size=1000), cfg), tokenizer, examples, cfg, seed=0)
    ckpt = tmp_path / "state.pt"
    loop.fit(_attach(make_llama(vocab_size=1000), cfg), tokenizer, examples, cfg, seed=0, ckpt=ckpt, stop_after=4)
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])  # a crash mid-write
    log = loop.fit(_attach(make_llama(vocab_size=1000), cfg), tokenizer, examples, cfg, seed=0, ckpt=ckpt)
    assert log["resumed_from_step"] == 0 and log["losses"] == pytest.approx(straight["losses"], rel=1e-5)
    assert (tmp_path / "state.pt.corrupt").exists()
    assert f"{ckpt} could not be loaded" in capsys.readouterr().out
