"""`make demo-compare`, dry-run: MAGVLT beside ARGVLT, and the classifier-free guidance sweep of both."""

from __future__ import annotations

from tests.helpers import ROOT, make


def test_make_demo_compare_dry_runs_the_guidance_sweep():
    dry = make("-n", "demo-compare", RUN="build/demo-compare-dry", GUIDANCE_WEIGHTS="0 2", SWEEP_COUNT="16")
    assert dry.returncode == 0, dry.stderr
    lines = [" ".join(line.split()) for line in dry.stdout.replace("\\\n", " ").splitlines()]
    sweep = [line for line in lines if "guidance-sweep/samples-" in line and "vltk sample" in line]
    points = sorted((line.split()[2].rsplit("/", 1)[1], line.split("--config ")[1].split()[0].rsplit("/", 1)[1],
                     line.split(".guidance=")[0].rsplit(" ", 1)[1], line.split(".guidance=")[1].split()[0])
                    for line in sweep)
    # Each generator's own artifact and guidance key, each task's own sampling config, every weight.
    assert points == sorted((gen, f"sample_{task}.toml", kind, w)
                            for kind, gen in (("magvlt", "gen"), ("argvlt", "gen-argvlt"))
                            for task in ("t2i", "i2t") for w in ("0", "2"))
    assert all("--count 16 --set candidates=1" in line for line in sweep)  # one sample per prompt: guidance alone
    compares = [line for line in lines if "vltk compare" in line]
    assert len(compares) == 2 and compares[1].count("guidance-sweep/scores-") == 8
    assert not (ROOT / "build" / "demo-compare-dry").exists()
