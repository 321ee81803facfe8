"""The command line per task: each subcommand's help lists only its options; extract a vector, chat steered by it; clear errors."""
import os, subprocess, sys
from pathlib import Path
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TQDM_DISABLE="1")


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "persona_vectors.cli", *map(str, args)], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=300, **kw)


def options(help_text):
    return {w.split("=")[0] for w in help_text.replace("[", " ").replace("]", " ").split() if w.startswith("--")}


def help_of(capsys, *argv):
    from persona_vectors.cli import main
    try: rc = main(list(argv))
    except SystemExit as e: rc = e.code  # argparse's --help exits 0
    return rc, capsys.readouterr().out


def test_each_command_lists_only_its_options(capsys):
    rc, out = help_of(capsys, "--help"); assert rc == 0
    assert [l.split()[0] for l in out.splitlines() if l.startswith("  ")] == ["run", "demo", "chat", "extract"], out
    run_o, chat_o, ext_o = (options(help_of(capsys, c, "--help")[1]) for c in ("run", "chat", "extract"))
    assert {"--stages", "--set", "--dry-run"} <= run_o and not run_o & {"--prompt", "--model", "--system", "--vector"}, run_o
    assert {"--prompt", "--vector", "--layer", "--alpha", "--positions"} <= chat_o and not chat_o & {"--stages", "--set", "--dry-run"}, chat_o
    assert {"--trait", "--out", "--n-questions"} <= ext_o and not ext_o & {"--prompt", "--stages"}, ext_o
    p = cli("frobnicate"); assert p.returncode == 2 and "unknown command 'frobnicate'" in p.stderr


def run_main(capsys, *argv):
    "The command line in this process (the tiny models load in well under a second; no interpreter start-up per call)."
    from persona_vectors.cli import main
    rc = main([str(a) for a in argv]); out = capsys.readouterr()
    return rc, out.out, out.err


def test_extract_then_chat_steered(tmp_path, capsys):
    "A vector extracted from a tiny model steers its chat: alpha 8 changes the greedy answer."
    from persona_vectors.models import tiny_model
    m, t = tiny_model("llama"); m.save_pretrained(tmp_path/"model"); t.save_pretrained(tmp_path/"model")
    rc, out, err = run_main(capsys, "extract", "--model", tmp_path/"model", "--out", tmp_path/"v.safetensors", "--n-questions", 2,
                            "--max-new-tokens", 8)
    assert rc == 0 and (tmp_path/"v.json").exists() and "v.safetensors: 3 variants of [5, 64]" in out, out + err
    answers = {}
    for a in (None, 8):
        steer = [] if a is None else ["--vector", tmp_path/"v.safetensors", "--layer", 2, "--alpha", a]
        rc, out, err = run_main(capsys, "chat", "--model", tmp_path/"model", "--prompt", "Tell me about ships.", "--max-new-tokens", 12, *steer)
        assert rc == 0, err
        answers[a] = out.strip()
    assert answers[None] != answers[8], answers  # (alpha 0 leaving the answer unchanged is 06_steering's test)
    # bad input: a coefficient without a vector; a vector from another model
    rc, out, err = run_main(capsys, "chat", "--model", tmp_path/"model", "--prompt", "hi", "--alpha", 2)
    assert rc == 2 and "pass --vector FILE too" in err, err
    m2, t2 = tiny_model("llama", hidden=32); m2.save_pretrained(tmp_path/"other"); t2.save_pretrained(tmp_path/"other")
    rc, out, err = run_main(capsys, "chat", "--model", tmp_path/"other", "--prompt", "hi", "--vector", tmp_path/"v.safetensors", "--layer", 2)
    assert rc == 2 and "hidden size 64" in err and "hidden size 32" in err, err
