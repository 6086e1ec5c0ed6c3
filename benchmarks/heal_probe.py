"""Choosing healing's settings (learning rate, position stride, LoRA rank, data mix): held-out KL after about four
minutes of training.

    python benchmarks/heal_probe.py --data-dir ../shared/data --output benchmarks/results/healing_probe

DIET's default at 20% on the real Gemma 3 270M, healed from the dense model on the healing data of
`heal_benchmark.py` for the number of steps that each configuration's measured seconds per step fit into the budget;
the measure is the guard's validation KL (held-out packed sequences of the healing data, every position scored), so no
evaluation example is looked at. Rows are saved as they finish (`--resume` is implicit: done configurations are kept).
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_benchmark as rb  # noqa: E402
from heal_benchmark import HEAL_SOURCES, mix_sources  # noqa: E402

from diet_hf import DietPruner  # noqa: E402
from diet_hf.evaluation import kl_divergence, next_token_logprobs, perplexity  # noqa: E402
from diet_hf.healing import HealingConfig, heal, healing_texts  # noqa: E402
from diet_hf.real_model import load_gemma3_270m  # noqa: E402
from diet_hf.tasks import PAPER_TASKS, evaluation_examples, get_task  # noqa: E402

# name: (HealingConfig overrides, seconds per training step measured on 2 cores, which sets the step count, data mix)
# data mix: "per_source": the seven sources in equal shares (WikiText-2 1/7, the default of heal_benchmark.py);
# "half_wikitext": WikiText-2 one half, the six tasks' train texts together the other half.
CONFIGS = {
    "s1_lr2e-4": ({"position_stride": 1, "learning_rate": 2e-4}, 17.5, "per_source"),
    "s4_lr2e-4": ({"position_stride": 4, "learning_rate": 2e-4}, 8.0, "per_source"),
    "s4_lr6e-4": ({"position_stride": 4, "learning_rate": 6e-4}, 8.0, "per_source"),
    "s1_lr6e-4": ({"position_stride": 1, "learning_rate": 6e-4}, 17.5, "per_source"),
    "s4_lr1.2e-3": ({"position_stride": 4, "learning_rate": 1.2e-3}, 8.0, "per_source"),
    "s4_lr6e-4_r64": (
        {"position_stride": 4, "learning_rate": 6e-4, "lora_r": 64, "lora_alpha": 128},
        8.5,
        "per_source",
    ),
    "s4_lr6e-4_half_wikitext": ({"position_stride": 4, "learning_rate": 6e-4}, 8.0, "half_wikitext"),
    # the rows above pruned with the default of their day (no reconstruction); these with the reconstructed default
    # (`uniform_mlp_mean_ls`): LoRA as healing's default against full fine-tuning of the decoder layers
    "ls_lora_lr6e-4": ({"position_stride": 4, "learning_rate": 6e-4}, 8.0, "per_source"),
    "ls_full_lr1e-4": ({"position_stride": 4, "learning_rate": 1e-4, "lora": False}, 8.0, "per_source"),
    "ls_full_lr2e-5": ({"position_stride": 4, "learning_rate": 2e-5, "lora": False}, 8.0, "per_source"),
    # bfloat16 autocast on this CPU (AVX512-BF16) and batch 2 x 2 accumulated: the data mix again, now also judged on
    # held-out WikiText-2 *validation* rows (the last 15% of them, out of the healing data of these rows)
    "bf16_per_source": ({"batch_size": 2, "gradient_accumulation_steps": 2}, 4.4, "per_source"),
    "bf16_half_wikitext": ({"batch_size": 2, "gradient_accumulation_steps": 2}, 4.4, "half_wikitext"),
    # layer-wise distillation (`hidden_weight`): the residual stream after every layer matched to the teacher's at
    # every position, beside the top-k KL; the teacher runs at every step instead of once before training
    "lw_h0": ({}, 4.4, "per_source"),
    "lw_h1": ({"hidden_weight": 1.0}, 4.4, "per_source"),
    "lw_h10": ({"hidden_weight": 10.0}, 4.4, "per_source"),
    # every 8th position scored: a cheaper head per step, so more steps in about the time of `lw_h0`
    "s8": ({"position_stride": 8}, 3.94, "per_source"),
    # LoRA on the MLP projections only (fewer adapters: a cheaper step), the same 59 steps as `lw_h0`
    "mlp_lora": ({"lora_modules": "mlp"}, 4.4, "per_source"),
    # WikiText-2 alone, the text the perplexity target is measured on (a bound on what the data mix costs it)
    "wikitext_only": ({}, 4.4, "wikitext"),
    # with the BOS-anchored default (`uniform_mlp_mean_ls_bos`, 2026-12-01): healing's defaults again, and every
    # packed row started with BOS (`bos_rows`), as every evaluation prompt and perplexity window is
    "bos_base": ({}, 4.4, "per_source"),
    "bos_rows": ({"bos_rows": True}, 4.4, "per_source"),
    # the same two with another seed (data order, packing offsets, LoRA's start)
    "bos_base_seed1": ({"seed": 1}, 4.4, "per_source"),
    "bos_rows_seed1": ({"bos_rows": True, "seed": 1}, 4.4, "per_source"),
    # healing raised the anchored default's dev-prompt KL (0.155 -> 0.166-0.170): LoRA on the MLP projections only,
    # leaving the attention (and how every token reads the BOS sink) as the anchored fit left it; two seeds
    "bos_mlp_lora": ({"lora_modules": "mlp"}, 4.4, "per_source"),
    "bos_mlp_lora_seed1": ({"lora_modules": "mlp", "seed": 1}, 4.4, "per_source"),
    # the dev-prompt KL still rose with MLP LoRA (0.155 -> 0.158-0.166): adapters kept orthogonal to every
    # projection's input at BOS (`keep_bos_state`), so the sink the anchor reproduces cannot move at all; two seeds,
    # against `bos_mlp_lora*` (2026-12-02)
    "bos_mlp_keep_bos": ({"lora_modules": "mlp", "keep_bos_state": True}, 4.4, "per_source"),
    "bos_mlp_keep_bos_seed1": ({"lora_modules": "mlp", "keep_bos_state": True, "seed": 1}, 4.4, "per_source"),
    # along a healing run (scratch, 2026-12-02) the dev-prompt KL jumped in the first 10 steps (0.155 -> 0.195, on
    # every task) while the held-out KL fell: the packed rows train positions that read other documents before them,
    # the evaluation prompts positions that read one document from BOS. `separate_documents`: each document of a row
    # attends only to itself, positions restarting at its BOS; against `bos_mlp_keep_bos*` (the defaults), two seeds
    "bos_docs": ({"lora_modules": "mlp", "keep_bos_state": True, "separate_documents": True}, 4.4, "per_source"),
    "bos_docs_seed1": (
        {"lora_modules": "mlp", "keep_bos_state": True, "separate_documents": True, "seed": 1},
        4.4,
        "per_source",
    ),
    # 2026-12-02 evening: the two knobs of the objective not probed yet, each against healing's defaults of the day
    # (`docs_base*`: the `bos_docs*` rows again, now also with the unseen-text perplexity): more of the teacher's
    # distribution kept per position (top-512 instead of top-64: the tail the coarse KL lumps into one bucket holds
    # the tokens perplexity is most sensitive to) and the next-token loss mixed in at half weight (`kd_weight` 0.5,
    # the "optionally mixed with the language-modelling loss"). The rule, written before their rows: a
    # candidate becomes healing's default if, averaged over seeds 0 and 1 against `docs_base*`, its held-out
    # WikiText-2 perplexity is at least 0.5 lower, its unseen-text perplexity not higher, and its dev-prompt KL at
    # most 0.003 higher; if both pass, the lower held-out perplexity. Seed 1 runs only for a candidate whose seed-0
    # row passes the same three checks against `docs_base`.
    **{
        f"docs_{name}{suffix}": (
            {"lora_modules": "mlp", "keep_bos_state": True, "separate_documents": True, **extra, **seed},
            4.4,
            "per_source",
        )
        for name, extra in (("base", {}), ("top512", {"top_k": 512}), ("kd05", {"kd_weight": 0.5}))
        for suffix, seed in (("", {}), ("_seed1", {"seed": 1}))
    },
    # 2026-12-02 night: the sequence length. The test perplexity reads windows of 2048 tokens; healing trains on rows
    # of 256. Per position of held-out WikiText-2 validation windows (a scratch diagnosis), the 20% model's loss gap
    # to dense is even across positions (0.55-0.65 nats), but the benchmark's healed model closed it by 0.13-0.17 nats
    # at positions below 512 (Gemma 3's sliding window) and by 0.10 beyond: the positions it never trained on. Rows of
    # 1024 tokens (batch 1, no accumulation: the same 1024 tokens per step) against the defaults of today
    # (`seq_base*`: top-512, measured again with the new measure), both in about the same training time. The rule,
    # written before their rows: 1024 becomes healing's default if, averaged over seeds 0 and 1 against `seq_base*`,
    # its held-out perplexity in windows of 2048 tokens is at least 0.5 lower, in windows of 512 at most 0.3 higher,
    # its unseen-text perplexity not higher and its dev-prompt KL at most 0.003 higher; and if a `diet-hf heal` at
    # the default length then stays under the memory target (3x the dense model's size). Seed 1 runs only for a
    # candidate whose seed-0 row passes the same four checks against `seq_base`.
    **{
        f"seq_{name}{suffix}": (
            {"lora_modules": "mlp", "keep_bos_state": True, "separate_documents": True, "top_k": 512, **extra, **seed},
            4.4,
            "per_source",
        )
        for name, extra in (
            ("base", {}),
            ("1024", {"seq_len": 1024, "batch_size": 1, "gradient_accumulation_steps": 1}),
            # after `seq_1024` failed (its steps also took longer): rows of 512 tokens, Gemma 3's sliding window, with
            # the defaults' 512 tokens per micro-batch (batch 1, accumulated twice), so a step costs about what the
            # defaults' does; the same rule against `seq_base*`, written before its row
            ("512", {"seq_len": 512, "batch_size": 1, "gradient_accumulation_steps": 2}),
        )
        for suffix, seed in (("", {}), ("_seed1", {"seed": 1}))
    },
}
# rows that also measure the unseen-text perplexity (`UNSEEN_TASKS`, below)
UNSEEN_TEXT_ROWS = tuple(name for name in CONFIGS if name.startswith(("docs_", "seq_")))
HELD_OUT_WIKITEXT = (
    "bf16_per_source",
    "bf16_half_wikitext",
    "lw_h0",
    "lw_h1",
    "lw_h10",
    "s8",
    "mlp_lora",
    "wikitext_only",
    "bos_base",
    "bos_rows",
    "bos_base_seed1",
    "bos_rows_seed1",
    "bos_mlp_lora",
    "bos_mlp_lora_seed1",
    "bos_mlp_keep_bos",
    "bos_mlp_keep_bos_seed1",
    "bos_docs",
    "bos_docs_seed1",
    *UNSEEN_TEXT_ROWS,
)
# rows whose held-out WikiText-2 perplexity is also read in windows of 2048 tokens, as the benchmark's test perplexity
LONG_WINDOWS = tuple(name for name in CONFIGS if name.startswith("seq_"))
# text of two tasks that are neither healing sources nor WikiText-2 (HellaSwag and PIQA have no train text here): dev
# half, prompt + gold answer, joined; its perplexity asks whether healing helps language modelling beyond its data
UNSEEN_TASKS = ("hellaswag", "piqa")
UNSEEN_EXAMPLES = 150
# the options of the rows that name none (the healing defaults of their day; LoRA on every projection until
# 2026-12-02, so rows that do not name `lora_modules` still run with "all", documents packed together and top-64
# teacher log-probs)
DEFAULTS = {
    "learning_rate": 6e-4,
    "position_stride": 4,
    "lora_modules": "all",
    "separate_documents": False,
    "top_k": 64,
}


def _wikitext_rows(data_dir: str, fraction: float = 0.15) -> tuple[list[str], list[str]]:
    """WikiText-2 validation rows cut in two: the first rows and the last `fraction` (held out)."""
    rows = [json.loads(line)["text"] for line in (Path(data_dir) / "wikitext2" / "validation.jsonl").open()]
    cut = int(len(rows) * (1 - fraction))
    return rows[:cut], rows[cut:]


def _wikitext_split(data_dir: str, fraction: float = 0.15) -> tuple[str, str]:
    """`_wikitext_rows` joined: the healing text and the held-out text."""
    head, tail = _wikitext_rows(data_dir, fraction)
    return "\n\n".join(head), "\n\n".join(tail)


def _unseen_text(data_dir: str, excluded: dict) -> str:
    """`UNSEEN_EXAMPLES` dev-half examples of each of `UNSEEN_TASKS` (calibration examples left out), each its prompt
    followed by its gold answer, joined with blank lines."""
    texts = []
    for task in UNSEEN_TASKS:
        docs = evaluation_examples(
            task, half="dev", exclude_ids=excluded.get(task), limit=UNSEEN_EXAMPLES, data_dir=data_dir
        )
        texts += [get_task(task).calibration_text(d) for d in docs]
    return "\n\n".join(texts)


def _held_out_perplexity(model, tokenizer, text: str, max_length: int = 512) -> float:
    """Perplexity of `text` as the benchmark's WikiText-2 test perplexity: 16 windows of `max_length` tokens after
    BOS (512 unless named; the benchmark itself reads 2048)."""
    return perplexity(model, tokenizer, text=text, max_length=max_length, max_windows=16, disable_progress=True)[
        "perplexity"
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--budget", type=float, default=240, help="seconds of training per configuration")
    parser.add_argument("--only", nargs="*", default=None, help="configuration names (default: all)")
    parser.add_argument("--redo", nargs="*", default=[], help="configuration names measured again")
    parser.add_argument(
        "--no-max-time",
        action="store_true",
        help="run the step counts in full (for runs beside other work: wall time then is not this run's own)",
    )
    parser.add_argument("--work-dir", default="/tmp/diet_heal_probe")
    parser.add_argument("--output", default="benchmarks/results/healing_probe")
    args = parser.parse_args(argv)
    output = Path(args.output).with_suffix(".json")
    results = json.loads(output.read_text()) if output.is_file() else {}
    results = {name: row for name, row in results.items() if name not in args.redo}
    dense, tokenizer, _ = load_gemma3_270m()
    pruner = DietPruner(dense, tokenizer, model_id="google/gemma-3-270m")
    pruner.profile(PAPER_TASKS, num_samples=100, data_dir=args.data_dir, channel_stats=True, disable_progress=True)
    texts = {source: healing_texts([source], data_dir=args.data_dir)[0] for source in HEAL_SOURCES}
    # a measure that does not depend on the data mix (the guard's held-out rows are the mix's first rows): KL from the
    # dense model after 25 dev-half evaluation prompts per task (never the test halves the benchmarks report)
    prompt_args = argparse.Namespace(data_dir=args.data_dir, half="dev", kl_prompts=25)
    prompts = rb._kl_prompts(prompt_args, pruner.scores.provenance["excluded_eval_ids"])
    dense_logprobs = next_token_logprobs(dense, tokenizer, prompts)

    unseen = _unseen_text(args.data_dir, pruner.scores.provenance["excluded_eval_ids"])

    def dev_kl(model) -> float:
        return kl_divergence(dense_logprobs, next_token_logprobs(model, tokenizer, prompts))

    for name, (overrides, seconds_per_step, mix) in CONFIGS.items():
        if name in results or (args.only and name not in args.only):
            continue
        steps = int(args.budget / seconds_per_step)
        config = HealingConfig(
            **{**DEFAULTS, **overrides},
            max_tokens=steps * 1024,
            max_time=None if args.no_max_time else args.budget * 1.1,
            eval_steps=1000,
            save_steps=1000,
        )
        shutil.rmtree(args.work_dir, ignore_errors=True)
        start = time.perf_counter()
        held_out = None
        if name in HELD_OUT_WIKITEXT:
            healing_wikitext, held_out = _wikitext_split(args.data_dir)
            data = mix_sources({**texts, "wikitext2": [healing_wikitext]}, mix)
        else:
            data = mix_sources(texts, mix)
        student = pruner.prune(sparsity=0.2)
        dev_kl_before = dev_kl(student)
        wikitext_before = None if held_out is None else _held_out_perplexity(student, tokenizer, held_out)
        unseen_before = _held_out_perplexity(student, tokenizer, unseen) if name in UNSEEN_TEXT_ROWS else None
        long_before = _held_out_perplexity(student, tokenizer, held_out, 2048) if name in LONG_WINDOWS else None
        healed = heal(student, dense, tokenizer, data, config=config, work_dir=args.work_dir)
        record = healed.config.pruning["healing"]
        results[name] = {
            "recipe": rb.DEFAULT_LABEL,
            "options": overrides,
            "data_mix": mix,
            "steps": record["steps"],
            "bf16": record["options"]["bf16"],
            "train_seconds": record["train_seconds"],
            "total_seconds": round(time.perf_counter() - start, 1),
            "timed_beside_other_work": args.no_max_time,
            "validation_kl_before": record["validation_kl_before"],
            "validation_kl_after": record["validation_kl_after"],
            "dev_prompt_kl_before": dev_kl_before,
            "dev_prompt_kl_after": dev_kl(healed),
        }
        if held_out is not None:
            results[name]["held_out_wikitext_ppl"] = [
                wikitext_before,
                _held_out_perplexity(healed, tokenizer, held_out),
            ]
        if long_before is not None:
            results[name]["held_out_wikitext_ppl_2048"] = [
                long_before,
                _held_out_perplexity(healed, tokenizer, held_out, 2048),
            ]
        if unseen_before is not None:
            results[name]["unseen_text_ppl"] = [unseen_before, _held_out_perplexity(healed, tokenizer, unseen)]
        print(name, results[name], flush=True)
        output.write_text(json.dumps(results, indent=1) + "\n")
        output.with_suffix(".md").write_text(render(results, args.budget))
        shutil.rmtree(args.work_dir, ignore_errors=True)
    return 0


def _extra(options: dict) -> str:
    extra = [f"hidden_weight {options['hidden_weight']:g}"] if options.get("hidden_weight") else []
    extra += [f"LoRA on {options['lora_modules']} projections"] if options.get("lora_modules", "all") != "all" else []
    extra += ["every packed row starts with BOS"] if options.get("bos_rows") else []
    extra += ["BOS states kept"] if options.get("keep_bos_state") else []
    extra += ["documents apart"] if options.get("separate_documents") else []
    extra += [f"top-{options['top_k']} teacher log-probs"] if options.get("top_k", 64) != 64 else []
    extra += [f"kd_weight {options['kd_weight']:g}"] if options.get("kd_weight", 1.0) != 1.0 else []
    extra += [f"rows of {options['seq_len']} tokens"] if options.get("seq_len", 256) != 256 else []
    return f" ({', '.join(extra)})" if extra else ""


def _before_after(row: dict, key: str, digits: int) -> str:
    """`row[key]`, a [before, after] pair, as "before → after", or "not measured"."""
    pair = row.get(key)
    return "not measured" if pair is None else f"{pair[0]:.{digits}f} → {pair[1]:.{digits}f}"


def render(results: dict, budget: float) -> str:
    lines = [
        "# Healing probe: learning rate, position stride, LoRA rank, data mix (Gemma 3 270M, DIET's default at 20%)",
        "",
        f"About {budget:g} s of training each (steps fixed from the seconds per step measured before), batch 4 x 256, "
        "top-64 teacher log-probs, LoRA r 16 unless named; measures: the guard's validation KL on held-out healing "
        "sequences (every position; the first packed rows of the data mix, so rows of different mixes are held out "
        "from different text) and, where measured, the KL from the dense model after 25 dev-half evaluation prompts "
        "per task (the same prompts for every row; test halves are never looked at). Total seconds include the "
        "teacher's pass over the training rows. The step counts came from an estimate of the seconds per step, so the "
        "stride-4 rows ran about a fifth longer than the stride-1 rows (about 250 s against 205 s of training, 382 s "
        "against 323 s in all): the stride's gain is partly time. Data mix `per_source`: the seven sources in equal "
        "shares (WikiText-2 1/7); `half_wikitext`: WikiText-2 validation one half, the six tasks' train texts the "
        "other. Rows `ls_*`: pruned with the reconstructed default (`uniform_mlp_mean_ls`), 30 steps each run in full "
        "(30,720 tokens), LoRA against full fine-tuning of the decoder layers (embedding and tied head frozen); "
        "their seconds were measured beside a benchmark on the same two cores, so compare their KLs, not their times. "
        "Rows `bf16_*`: the reconstructed default, bfloat16 autocast (this CPU has AVX512-BF16) and batch 2 x 2 "
        "accumulated (the healing defaults since), 40 steps each (40,960 tokens) run beside the test suite (times "
        "not comparable); their healing data leaves out the last 15% of the WikiText-2 validation rows, on which "
        "the last column's perplexity is measured (16 windows of 512 tokens), so the two mixes are judged on the "
        "same held-out text. Rows `lw_*`: layer-wise distillation (`hidden_weight` h: h x the relative squared error "
        "of every layer's output added to the KL), 59 steps each with nothing else running, otherwise as `bf16_*` on "
        "the equal-shares mix; their teacher runs at every step (no pass before training), so compare total "
        "seconds. Row `s8`: every 8th position scored, 67 steps in about the total time of `lw_h0`. Rows `mlp_lora` "
        "(LoRA on gate/up/down only) and `wikitext_only` (healing data: the same WikiText-2 validation rows alone, so "
        "its held-out KL is measured on WikiText-2 sequences, not the mix's): 59 steps as `lw_h0`, nothing else "
        "running. Rows `bos_*`: pruned with the BOS-anchored default (`uniform_mlp_mean_ls_bos`), 59 steps planned as "
        "`lw_h0` (57 to 59 ran before the time limit), nothing else running; `bos_rows` starts every packed row "
        "with BOS, so its held-out KL is measured on other rows than `bos_base`'s: compare their dev-prompt KL and "
        "held-out perplexity. Rows `bos_mlp_lora*` (2026-12-02): LoRA on gate/up/down only, 59 steps, nothing else "
        "running, against `bos_base*` of the same seed (the rule, written before them: a candidate for healing's "
        "default if, averaged over both seeds, its held-out perplexity is at most 0.3 higher and its dev-prompt KL "
        "lower). Rows `bos_mlp_keep_bos*` (2026-12-02): the same with `keep_bos_state` (every adapter's input matrix "
        "kept orthogonal to its projection's input at BOS in position 0, so no hidden state of that token moves), "
        "against `bos_mlp_lora*` of the same seed (the rule, written before them: healing's default if, averaged "
        "over both seeds, its held-out perplexity is at most 0.3 higher and its dev-prompt KL lower). Rows "
        "`bos_docs*` (2026-12-02): the defaults (LoRA on gate/up/down, BOS states kept) with `separate_documents` "
        "(every document of a packed row attends only to itself, positions restarting at its BOS, so its held-out KL "
        "is measured on other rows, read otherwise), 59 steps planned, nothing else running, against "
        "`bos_mlp_keep_bos*` of the same seed (the rule, written before them: healing's default if, averaged over "
        "both seeds, its held-out perplexity is at most 0.3 higher and its dev-prompt KL lower). Rows `docs_*` "
        "(2026-12-02 evening): healing's defaults of the day (`docs_base*`, the `bos_docs*` settings measured again) "
        "against top-512 teacher log-probs per scored position and the next-token loss mixed in at half weight "
        "(`kd_weight` 0.5), 59 steps planned, nothing else running, on a machine without fast bfloat16 (an AMD EPYC "
        "without AVX512-BF16: float32, about 10-12 s per step, so 25 to 28 steps ran in the time; compare them with "
        "each other, not with the rows above); the last column: perplexity of text that is "
        "neither healing data nor WikiText-2 (150 dev-half HellaSwag and 150 PIQA examples, prompt + gold answer, "
        "joined; 16 windows of 512 tokens). The rule, written before their rows: a candidate becomes the default if, "
        "averaged over seeds 0 and 1 against `docs_base*`, its held-out WikiText-2 perplexity is at least 0.5 lower, "
        "its unseen-text perplexity not higher and its dev-prompt KL at most 0.003 higher; seed 1 runs only for a "
        "candidate whose seed-0 row passes the same checks. Outcome: top-512 passed (held-out perplexity 52.3 against "
        "52.9 averaged, unseen-text perplexity 25.43 against 25.62, dev-prompt KL 0.155 against 0.157) and is "
        "healing's default since; with `kd_weight` 0.5 the guard's held-out KL never fell below the unhealed "
        "model's, so the guard rolled the healing back (no seed 1). Rows `seq_*` (2026-12-02 night, the same machine "
        "without fast bfloat16, nothing else running): healing's defaults of the day (`seq_base`: top-512) against "
        "rows of 1024 tokens (`seq_1024`: batch 1, no accumulation, so the same 1024 tokens per step), about the same"
        " training time planned (a 1024-token step took 16-23 s against 13-14 s, and the time limit is checked "
        "between steps, so it ran 416 s against 322 s: 18 steps against 21); the held-out WikiText-2 perplexity also "
        "in 16 windows of 2048 tokens, as the benchmark's test perplexity reads. The rule, written before their rows:"
        " 1024 becomes the default if, averaged over two seeds, its 2048-window perplexity is at least 0.5 lower, its"
        " 512-window perplexity at most 0.3 higher, its unseen-text perplexity not higher and its dev-prompt KL at "
        "most 0.003 higher; seed 1 only if seed 0 passes all four. Outcome: 2048-window perplexity 36.99 against "
        "38.40 and 512-window 51.6 against 53.0 (both lower, with 29% more training time), but unseen-text perplexity"
        " 25.66 against 25.52 and dev-prompt KL 0.168 against 0.163: two checks failed, so no seed 1 and not adopted "
        "(`seq_len` stays 256; the option is there). Then `seq_512` (rows of 512 tokens, Gemma 3's sliding window, "
        "batch 1 accumulated twice: the defaults' 512 tokens per micro-batch), the same rule: 21 steps in 355 s; "
        "2048-window perplexity 38.16 against 38.40, 512-window 52.6 against 53.0, unseen-text perplexity 25.62 "
        "against 25.52, dev-prompt KL 0.171 against 0.163: three checks failed, not adopted.",
        "",
        "| configuration | learning rate | position stride | LoRA r | data mix | steps | train s | total s "
        "| held-out KL before → after | dev-prompt KL before → after | held-out WikiText-2 validation ppl "
        "| held-out ppl, 2048-token windows | unseen-text ppl |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results.items():
        options = row["options"]
        dev = (
            f"{row['dev_prompt_kl_before']:.3f} → {row['dev_prompt_kl_after']:.3f}"
            if "dev_prompt_kl_after" in row
            else "not measured"
        )
        contended = " (beside other work)" if row.get("timed_beside_other_work") else ""
        options = {**DEFAULTS, **options}
        ppl = _before_after(row, "held_out_wikitext_ppl", 1)
        long = _before_after(row, "held_out_wikitext_ppl_2048", 1)
        unseen = _before_after(row, "unseen_text_ppl", 2)
        lines.append(
            f"| {name}{_extra(options)} | {options['learning_rate']:g} | {options['position_stride']} | "
            f"{options.get('lora_r', 16) if options.get('lora', True) else 'full (decoder)'} | "
            f"{row.get('data_mix', 'per_source')} | {row['steps']} | {row['train_seconds']:.0f}{contended} | "
            f"{row['total_seconds']:.0f}{contended} | "
            f"{row['validation_kl_before']:.3f} → {row['validation_kl_after']:.3f} "
            f"| {dev} | {ppl} | {long} | {unseen} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
