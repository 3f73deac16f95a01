import json

import pytest
import torch

from k2_recipes.cli import main


def test_unknown_preset_names_the_choices():
    with pytest.raises(SystemExit, match=r"unknown preset 'huge'.*\['small', 'smoke', 'tiny'\]"):
        main(["demo", "--preset", "huge"])


def test_unknown_command_is_rejected_with_usage():
    with pytest.raises(SystemExit, match="unknown command 'train'"):
        main(["train"])


def test_help_lists_commands(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    assert "demo" in out and "pretrain" in out


def test_stage_help_exposes_overridable_fields(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["pretrain", "--preset", "smoke", "--help"])
    assert exc.value.code == 0
    assert "--high-res.steps" in capsys.readouterr().out


def test_micro_demo_writes_a_complete_run_directory(tmp_path):
    from k2_dit.model import DiT
    from k2_dit.train import load_checkpoint

    run = tmp_path / "demo"
    overrides = [
        "--run-dir", str(run),
        "--pretrain.no-progress",
        "--pretrain.world.train-scenes", "64",
        "--pretrain.low-res.steps", "3",
        "--pretrain.high-res.steps", "3",
        "--pretrain.eval.num-prompts", "8",
        "--pretrain.eval.steps", "2",
        "--pretrain.eval.grid-size", "2",
    ]  # fmt: skip
    main(["demo", "--preset", "smoke", *overrides])

    config = json.loads((run / "config.json").read_text())
    assert config["config"]["pretrain"]["high_res"]["steps"] == 3
    assert config["environment"]["versions"]["k2-dit"]
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["evals"]) == {"untrained", "pretrained"}
    assert summary["evals"]["pretrained"]["num_prompts"] == 8
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines if m.get("stage") == "high_res"][-1] == 6
    report = (run / "report.html").read_text()
    assert "Verifier scores" in report and "data:image/png;base64" in report
    assert (run / "images" / "pretrained.png").stat().st_size > 0

    model, cfg, meta = load_checkpoint(run / "checkpoints" / "pretrain-32px", DiT)
    assert meta["step"] == 6
    assert cfg.dim == config["config"]["pretrain"]["model"]["dim"]
    assert all(p.isfinite().all() for p in model.parameters())

    from k2_dit.text import TextEncoder

    encoder = TextEncoder.from_pretrained(run / "text_encoder", dtype=torch.float32)
    hidden, mask = encoder.encode(["a red circle"], max_length=cfg.text.max_tokens)
    assert hidden.shape[2:] == (cfg.text.num_layers, cfg.text.encoder_dim) and mask.all()
