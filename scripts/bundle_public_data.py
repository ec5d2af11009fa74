"""Bring public benchmark files into the package: ``lad/data/public/<file>.gz`` plus MANIFEST.json.

    python scripts/bundle_public_data.py SOURCE_DIR

SOURCE_DIR holds the upstream files byte for byte (see the SOURCES table below for where each
comes from). Each is gzip-compressed deterministically (level 9, no name, mtime 0), so bundling
the same file twice gives the same bytes and git sees no change; the manifest records the sha256
and row count of the *decompressed* file, which is what ``tests/test_public_data.py`` checks.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lad.data.public import MANIFEST_FILE, PUBLIC_DIR  # noqa: E402

# file -> (what, upstream "repo : path @ commit", license)
SOURCES = {
    "math500.jsonl": ("MATH-500 (PRM800K test split)", "hkust-nlp/simpleRL-reason : examples/simplelr_math_eval/data/math500/test.jsonl @ cf1c7858", "MIT"),
    "aime24.jsonl": ("AIME 2024 I+II", "QwenLM/Qwen2.5-Math : evaluation/data/aime24/test.jsonl @ a45202bd", "MIT"),
    "amc23.jsonl": ("AMC 2023", "QwenLM/Qwen2.5-Math : evaluation/data/amc23/test.jsonl @ a45202bd", "MIT"),
    "amc22_23.jsonl": ("AMC 2022+2023", "agentica-project/deepscaler : deepscaler/data/test/amc.json @ 95ef74ff", "MIT"),
    "olympiadbench.jsonl": ("OlympiadBench OE_TO_maths_en_COMP", "QwenLM/Qwen2.5-Math : evaluation/data/olympiadbench/test.jsonl @ a45202bd", "MIT"),
    "minerva_math.jsonl": ("Minerva Math (OCW courses)", "agentica-project/deepscaler : deepscaler/data/test/minerva.json @ 95ef74ff", "MIT"),
    "gsm8k_test.jsonl": ("GSM8K test", "openai/grade-school-math : grade_school_math/data/test.jsonl @ 3101c7d5", "MIT"),
    "math_train.jsonl": ("MATH train with final answers; no problem overlaps MATH-500", "agentica-project/deepscaler : deepscaler/data/train/math.json @ 95ef74ff", "MIT"),
    "humaneval.jsonl": ("HumanEval", "openai/human-eval : data/HumanEval.jsonl.gz @ 6d43fb98", "MIT"),
    "humanevalplus.jsonl": ("HumanEval+ v0.1.10 (base and plus inputs)", "evalplus/humanevalplus_release : HumanEvalPlus.jsonl.gz @ 200defce", "Apache-2.0"),
    "mbppplus.jsonl": ("MBPP+ v0.2.0 (base and plus inputs)", "evalplus/mbppplus_release : MbppPlus.jsonl.gz @ dadf43da", "Apache-2.0"),
    "livecodebench_public.jsonl": ("LiveCodeBench 2024-08..2025-02, public tests only", "agentica-project/rllm history (fork winnieyangwannan/rllm) : rllm/data/test/code/livecodebench.json @ d3c3c8f3", "MIT"),
    "codecontests_test.jsonl": ("DeepMind CodeContests test split (stdin/stdout)", "agentica-project/rllm : rllm/data/test/code/code_contests.json @ 874daa4a", "MIT"),
}


def bundle(source_dir: Path, names: list[str]) -> dict:
    manifest_path = PUBLIC_DIR / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"files": {}}
    for name in names:
        if name not in SOURCES:
            raise SystemExit(f"{name}: no entry in SOURCES (add what it is, its upstream and license first)")
        raw = (source_dir / name).read_bytes()
        what, upstream, license_ = SOURCES[name]
        packed = gzip.compress(raw, compresslevel=9, mtime=0)
        (PUBLIC_DIR / f"{name}.gz").write_bytes(packed)
        manifest["files"][name] = {
            "what": what, "source": upstream, "license": license_,
            "sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw),
            "rows": sum(1 for line in raw.splitlines() if line.strip()),
            "stored_as": f"{name}.gz", "stored_bytes": len(packed),
        }
        print(f"{name}: {len(raw):,} -> {len(packed):,} bytes")
    manifest["files"] = dict(sorted(manifest["files"].items()))
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source_dir", type=Path, help="folder of the upstream files")
    ap.add_argument("files", nargs="*", help="file names to bundle (default: every file in SOURCES)")
    args = ap.parse_args()
    bundle(args.source_dir, args.files or sorted(SOURCES))


if __name__ == "__main__":
    main()
