"""Which transformers releases load a diet-hf checkpoint without diet-hf: a compatibility matrix.

A pruned checkpoint promises to load "anywhere with stock transformers" through its remote code. The test suite
proves it on the two versions the package pins (5.24 and 4.57.6); users load checkpoints with whatever transformers
they have. This script saves tiny pruned checkpoints with the current code (both families, uneven widths, a layer
without attention and one without MLP, with and without compensation biases, one sequence and one token classifier,
and the image-text Gemma 3 of the same pruned decoder beside its stock vision tower) beside the stock dense models
and the committed v1 and v0.1 fixtures, then, for each interpreter given, in a fresh process where `import diet_hf`
fails:

- loads each through the Auto classes with `trust_remote_code=True` and compares its logits with the reference
  computed here (and with the fixtures' saved logits);
- generates four tokens greedily with the cache (causal models) and compares them with the reference, and with
  what a static cache, prompt-lookup (assisted) decoding and a `DynamicCache()` built without a config give;
- asks for `output_attentions` (eager): one entry per layer, each with that layer's head count;
- takes one training step's gradients (`labels=` loss, backward) and checks they are finite and non-zero;
- saves the loaded model with `save_pretrained` and loads it back, comparing logits again.

Image-text checkpoints load through `AutoModelForImageTextToText` and run from pixels, text and `token_type_ids`.

Each interpreter only needs transformers and torch (e.g. `python -m venv env && env/bin/pip install
transformers==5.0.0 torch==2.13.0`). Rows go to `--output` (JSON and Markdown); nothing is tuned here.

    python benchmarks/transformers_compat.py --python /tmp/tf-5.0.0/bin/python /tmp/tf-4.50.3/bin/python \
        --output benchmarks/results/transformers_compat
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures"
TOLERANCE = 1e-4

CHILD = textwrap.dedent(
    """
    import json, sys, tempfile, traceback
    sys.modules["diet_hf"] = None  # `import diet_hf` fails in this process
    import torch, transformers
    from transformers import (AutoModelForCausalLM, AutoModelForImageTextToText, AutoModelForSequenceClassification,
                              AutoModelForTokenClassification)

    AUTO = {"causal": AutoModelForCausalLM, "cls": AutoModelForSequenceClassification,
            "tok": AutoModelForTokenClassification, "image-text": AutoModelForImageTextToText}

    def run(path, inputs, kind):
        auto = AUTO[kind]
        ids = inputs["input_ids"]
        model = auto.from_pretrained(path, trust_remote_code=True).eval()
        stock = "pruned" not in model.config.model_type
        assert stock or type(model).__module__.startswith("transformers_modules"), type(model).__module__
        row = {"class": type(model).__name__}
        with torch.no_grad():
            row["logits"] = model(**inputs).logits.tolist()
        if kind == "image-text":  # images and text: greedy decoding from the first row's image and prompt
            first = {name: value[:1] for name, value in inputs.items()}
            greedy = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False)
            row["generated"] = model.generate(**first, **greedy).tolist()
        if kind == "causal":
            model.generation_config.pad_token_id = 0
            greedy = dict(max_new_tokens=4, do_sample=False)
            row["generated"] = model.generate(ids[:1], min_new_tokens=4, **greedy).tolist()
            # the cache paths that change most between releases, each against the dynamic cache's greedy output;
            # each is tried apart, so that one release's failure does not hide the others' outcome
            plain = model.generate(ids[:1], **greedy).tolist()  # assisted decoding takes no `min_new_tokens`

            def static_cache():
                static = model.generate(ids[:1], min_new_tokens=4, cache_implementation="static", **greedy)
                return static.tolist() == row["generated"]

            def prompt_lookup():
                return model.generate(ids[:1], prompt_lookup_num_tokens=2, **greedy).tolist() == plain

            def dynamic_cache_without_config():
                cache = transformers.DynamicCache()  # its layers appear as they are first updated
                with torch.no_grad():
                    model(ids[:1, :-1], past_key_values=cache, use_cache=True)
                    step = model(ids[:1, -1:], past_key_values=cache, use_cache=True).logits[0, -1]
                return bool(torch.allclose(step, torch.tensor(row["logits"])[0, -1], atol=1e-4, rtol=1e-4))

            row["cache_paths_agree"] = {}
            for name, check in (("static cache", static_cache), ("prompt lookup", prompt_lookup),
                                ("DynamicCache()", dynamic_cache_without_config)):
                try:
                    row["cache_paths_agree"][name] = check()
                except Exception as error:
                    row["cache_paths_agree"][name] = f"{type(error).__name__}: {str(error)[:200]}"
            # `output_attentions`: one entry per layer, each with that layer's head count
            eager = auto.from_pretrained(path, trust_remote_code=True, attn_implementation="eager").eval()
            with torch.no_grad():
                attentions = eager(ids, output_attentions=True).attentions
            heads = []
            for layer in eager.model.layers:
                q_proj = getattr(layer.self_attn, "q_proj", None)
                heads.append(0 if q_proj is None else q_proj.weight.shape[0] // eager.config.head_dim)
            row["attention_heads"] = {"returned": [a.shape[1] for a in attentions], "layers": heads}
        model.train()
        labels = {"cls": torch.zeros(len(ids), dtype=torch.long), "tok": torch.zeros_like(ids)}.get(kind, ids)
        model(**inputs, labels=labels).loss.backward()
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.numel()]
        row["without_grad"] = [n for n, p in params if p.grad is None]
        grads = [p.grad for _, p in params if p.grad is not None]
        row["grads_finite"] = all(bool(torch.isfinite(g).all()) for g in grads)
        row["grad_norm"] = float(sum(g.pow(2).sum() for g in grads) ** 0.5)
        model.eval()
        with tempfile.TemporaryDirectory() as saved:
            model.save_pretrained(saved)
            again = auto.from_pretrained(saved, trust_remote_code=True).eval()
            with torch.no_grad():
                row["resaved_logits"] = again(**inputs).logits.tolist()
        return row

    rows = []
    for name, path, inputs, kind in json.load(open(sys.argv[1])):
        try:
            rows.append({"name": name, **run(path, {k: torch.tensor(v) for k, v in inputs.items()}, kind)})
        except Exception as error:
            frames = traceback.extract_tb(error.__traceback__)
            where = f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
            rows.append({"name": name, "error": f"{type(error).__name__}: {str(error)[:300]} ({where})"})
    json.dump({"transformers": transformers.__version__, "torch": torch.__version__, "rows": rows},
              open(sys.argv[2], "w"))
    """
)


def build_checkpoints(root: Path) -> list[dict]:
    """Saves the current format's checkpoints under `root`; returns one job per checkpoint with reference outputs."""
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from conftest import (
        image_text_inputs,
        random_batch,
        tiny_dense_model,
        tiny_image_text_model,
        tiny_pruned_classifier,
        uneven_pruned_model,
    )

    ids = random_batch()
    causal = {}
    for family in ("gemma2", "gemma3_text"):
        for compensated in (False, True):  # layer 0 without attention, layer 1 without MLP
            causal[f"{family}{'-compensated' if compensated else ''}"] = uneven_pruned_model(family, compensated)
    for family in ("gemma2", "gemma3_text"):  # the stock dense models, for what a release does to Gemma itself
        causal[f"stock {family} (dense)"] = tiny_dense_model(family)
    jobs = []
    for index, (name, model) in enumerate(causal.items()):
        path = root / f"causal-{index}"
        model.save_pretrained(path)
        model.generation_config.pad_token_id = 0
        with torch.no_grad():
            logits = model(ids).logits
        generated = model.generate(ids[:1], max_new_tokens=4, min_new_tokens=4, do_sample=False)
        jobs.append(
            dict(name=name, path=path, inputs={"input_ids": ids}, kind="causal", logits=logits, generated=generated)
        )
    classifier = tiny_pruned_classifier()
    classifier.save_pretrained(root / "gemma2-classifier")
    with torch.no_grad():
        logits = classifier(ids).logits
    jobs.append(
        dict(
            name="gemma2-classifier",
            path=root / "gemma2-classifier",
            inputs={"input_ids": ids},
            kind="cls",
            logits=logits,
        )
    )
    # a token classifier: the compensated uneven Gemma 3 decoder under a new per-token head
    from transformers import AutoModelForTokenClassification

    uneven_pruned_model("gemma3_text", compensated=True).save_pretrained(root / "gemma3-decoder")
    token = AutoModelForTokenClassification.from_pretrained(root / "gemma3-decoder", num_labels=3).eval()
    token.save_pretrained(root / "gemma3-token-classifier")
    with torch.no_grad():
        logits = token(ids).logits
    path = root / "gemma3-token-classifier"
    jobs.append(dict(name="gemma3 token classifier", path=path, inputs={"input_ids": ids}, kind="tok", logits=logits))
    # image-text Gemma 3: its text decoder pruned as above (with compensation biases), the vision tower kept; and the
    # stock dense model
    image_text = {
        "gemma3 image-text": uneven_pruned_model("gemma3_text", compensated=True, image_text=True),
        "stock gemma3 image-text (dense)": tiny_image_text_model(tiny_dense_model("gemma3_text")),
    }
    for index, (name, model) in enumerate(image_text.items()):
        path = root / f"image-text-{index}"
        model.save_pretrained(path)
        inputs = image_text_inputs(model)
        first = {key: value[:1] for key, value in inputs.items()}
        with torch.no_grad():
            logits = model(**inputs).logits
            generated = model.generate(**first, max_new_tokens=4, min_new_tokens=4, do_sample=False)
        jobs.append(dict(name=name, path=path, inputs=inputs, kind="image-text", logits=logits, generated=generated))
    for fixture in ("v1-pruned-gemma3", "v0.1-pruned-gemma3"):
        expected = json.loads((FIXTURES / fixture / "expected_logits.json").read_text())
        jobs.append(
            dict(
                name=f"fixture {fixture}",
                path=FIXTURES / fixture,
                inputs={"input_ids": torch.tensor(expected["input_ids"])},
                kind="causal",
                logits=torch.tensor(expected["logits"]),
            )
        )
    return jobs


def check(job: dict, row: dict) -> str:
    """'ok', or what differs from the reference."""
    if "error" in row:
        return row["error"]
    problems = []
    difference = (torch.tensor(row["logits"]) - job["logits"]).abs().max().item()
    if difference > TOLERANCE:
        problems.append(f"logits differ by {difference:.2e}")
    if "generated" in job and row.get("generated") != job["generated"].tolist():
        problems.append("greedy generation differs")
    if "attention_heads" in row and row["attention_heads"]["returned"] != row["attention_heads"]["layers"]:
        heads = row["attention_heads"]
        problems.append(f"output_attentions gives heads {heads['returned']} for layers of {heads['layers']}")
    for path, agrees in row.get("cache_paths_agree", {}).items():
        if isinstance(agrees, str):
            problems.append(f"{path} decoding fails: {agrees}")
        elif not agrees:
            problems.append(f"{path} decoding differs from the dynamic cache's")
    if not row["grads_finite"] or row["grad_norm"] == 0:
        problems.append(f"gradients not usable (finite {row['grads_finite']}, norm {row['grad_norm']:.3g})")
    resaved = (torch.tensor(row["resaved_logits"]) - torch.tensor(row["logits"])).abs().max().item()
    if resaved > TOLERANCE:
        problems.append(f"save_pretrained round trip changes logits by {resaved:.2e}")
    if problems:
        return "; ".join(problems)
    if row["without_grad"]:  # the code saved with checkpoints before 2026-12-03 kept a removed sublayer's input norm
        return f"ok, but no gradient reaches {', '.join(row['without_grad'][:3])}"
    return "ok"


def run_interpreter(python: str, jobs: list[dict], workdir: Path, extra_env: dict) -> dict:
    spec = [
        (job["name"], str(job["path"]), {k: v.tolist() for k, v in job["inputs"].items()}, job["kind"]) for job in jobs
    ]
    (workdir / "jobs.json").write_text(json.dumps(spec))
    (workdir / "child.py").write_text(CHILD)
    env = {**os.environ, "HF_MODULES_CACHE": str(workdir / "modules"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    env.update(OMP_NUM_THREADS="1", **extra_env)
    result = subprocess.run(
        [os.path.abspath(python), str(workdir / "child.py"), str(workdir / "jobs.json"), str(workdir / "out.json")],
        env=env,
        capture_output=True,
        text=True,
        cwd=workdir,
        timeout=900,
    )
    if result.returncode != 0:
        return {"python": python, "error": result.stderr.strip().splitlines()[-1] if result.stderr else "failed"}
    out = json.loads((workdir / "out.json").read_text())
    by_name = {row["name"]: row for row in out["rows"]}
    verdicts = {job["name"]: check(job, by_name[job["name"]]) for job in jobs}
    return {"python": python, "transformers": out["transformers"], "torch": out["torch"], "verdicts": verdicts}


def markdown(results: list[dict], names: list[str], extra_env: dict) -> str:
    lines = [
        "# Loading diet-hf checkpoints with other transformers releases",
        "",
        "`python benchmarks/transformers_compat.py` (see its docstring): each checkpoint loaded in a fresh process "
        "without diet-hf through `trust_remote_code=True`; logits within 1e-4 of the reference, greedy generation "
        "equal (also with a static cache, prompt-lookup decoding and a `DynamicCache()` without a config), "
        "`output_attentions` one entry per layer with its head count, one "
        "backward pass with finite non-zero gradients on every weight, `save_pretrained` round trip "
        "unchanged. The image-text checkpoints (a pruned text decoder beside the stock vision tower) are run from "
        "images and text: logits, greedy decoding, the backward pass and the round trip (no cache-path or attention "
        "checks). The checkpoints not named stock or fixture were saved by this diet-hf; the fixtures carry the "
        "remote code of "
        "earlier versions (format v1, diet-hf 0.1); the stock dense models (no remote code) show what a release does "
        "to Gemma itself."
        + (f" Every child ran with {', '.join(f'`{k}={v}`' for k, v in extra_env.items())}." if extra_env else ""),
        "",
        "| transformers | torch | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    notes = {}  # one footnote per distinct outcome: {verdict: ([checkpoint names], [versions])}
    for result in sorted(results, key=lambda r: _version_key(r.get("transformers", "0"))):
        if "error" in result:
            lines.append(f"| {result['python']} | | " + " | ".join("–" for _ in names) + " |")
            notes.setdefault(result["error"], ([], []))[1].append(result["python"])
            continue
        cells = []
        for name in names:
            verdict = re.sub(r" \(/[^)]*\)", "", result["verdicts"][name])  # paths differ per environment
            if verdict == "ok":
                cells.append("ok")
                continue
            checkpoints, versions = notes.setdefault(verdict, ([], []))
            if name not in checkpoints:
                checkpoints.append(name)
            if result["transformers"] not in versions:
                versions.append(result["transformers"])
            number = list(notes).index(verdict) + 1
            cells.append(f"ok ({number})" if verdict.startswith("ok, but") else f"**fails** ({number})")
        lines.append(f"| {result['transformers']} | {result['torch']} | " + " | ".join(cells) + " |")
    if notes:
        lines += ["", "Notes and failures:", ""]
        for number, (verdict, (checkpoints, versions)) in enumerate(notes.items(), 1):
            lines.append(
                f"{number}. {', '.join(checkpoints) or 'every checkpoint'} on {', '.join(versions)}: {verdict}"
            )
    return "\n".join(lines) + "\n"


def _version_key(version: str) -> tuple:
    return tuple(int(part) if part.isdigit() else 0 for part in version.split(".")[:3])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", nargs="+", required=True, help="interpreters with transformers and torch")
    parser.add_argument("--output", type=Path, required=True, help="path prefix of the .json and .md results")
    parser.add_argument("--env", nargs="*", default=[], metavar="KEY=VALUE", help="set in every child process")
    args = parser.parse_args(argv)
    if bad := [item for item in args.env if "=" not in item]:
        parser.error(f"--env expects KEY=VALUE, got {bad[0]!r}")
    extra_env = dict(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        jobs = build_checkpoints(root / "checkpoints")
        results = []
        for index, python in enumerate(args.python):
            workdir = root / f"run{index}"
            workdir.mkdir()
            results.append({**run_interpreter(python, jobs, workdir, extra_env), "env": extra_env})
            print(json.dumps(results[-1]), flush=True)
    names = [job["name"] for job in jobs]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    args.output.with_suffix(".md").write_text(markdown(results, names, extra_env))
    print(markdown(results, names, extra_env))


if __name__ == "__main__":
    main()
