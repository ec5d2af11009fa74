"""Screenshots of what a pipeline run left in MLflow: the pipeline run's page, the registered
version's page and the comparison report, taken with headless Chromium from an MLflow server
started on the store for the purpose.

    python scripts/mlflow_screenshots.py OUTPUT_OF_A_LOCAL_RUN [--model lad-policy] [--version champion] [--out DIR]

OUTPUT_OF_A_LOCAL_RUN is the folder of ``lad pipeline run --local --output ...`` (its mlflow.db),
or any MLflow tracking URI. The pipeline run shown is the one that registered the version. Needs
Debian's ``chromium`` (``apt-get install -y chromium``). Writes pipeline_run.png, model_version.png
and comparison_report.png into --out (default: the current folder) and prints their paths.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lad.local_server import free_port, stop_process_group, wait_until_healthy  # noqa: E402

WIDTH, HEIGHT = 1800, 1500
# The MLflow UI is a single-page app: Chromium's virtual clock runs this long for it to fetch and draw.
RENDER_MS = 20000


def tracking_uri(store: str) -> str:
    path = Path(store)
    if path.is_dir():
        if not (path / "mlflow.db").is_file():
            sys.exit(f"error: {path} has no mlflow.db (expected the --output folder of a local pipeline run)")
        return f"sqlite:///{(path / 'mlflow.db').resolve()}"
    return store


def pages(uri: str, model: str, version: str, base: str) -> dict[str, str]:
    """The pages to shoot, by file name: the pipeline run, the version, the report among the run's artifacts."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        mv = client.get_model_version(model, version) if version.isdigit() else client.get_model_version_by_alias(model, version)
    except MlflowException as err:
        sys.exit(f"error: model {model!r} version/alias {version!r}: {err.message}")
    stage = client.get_run(mv.run_id)
    parent = stage.data.tags.get("mlflow.parentRunId", stage.info.run_id)
    run = f"{base}/#/experiments/{stage.info.experiment_id}/runs/{parent}"
    return {
        "pipeline_run.png": run,
        "model_version.png": f"{base}/#/models/{model}/versions/{mv.version}",
        "comparison_report.png": f"{run}/artifacts/comparison/compare.html",
    }


def shoot(chromium: str, url: str, png: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="lad-chromium-") as profile:
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               f"--user-data-dir={profile}", "--hide-scrollbars", f"--window-size={WIDTH},{HEIGHT}",
               f"--virtual-time-budget={RENDER_MS}", f"--screenshot={png}", url]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if done.returncode != 0 or not png.is_file():
        sys.exit(f"error: chromium could not take {url}: {done.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", help="the --output folder of a local pipeline run, or a tracking URI")
    parser.add_argument("--model", default="lad-policy", help="registered model name")
    parser.add_argument("--version", default="champion", help="version number or alias")
    parser.add_argument("--out", type=Path, default=Path("."), help="where the PNGs go")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("error: no chromium on PATH (Debian: apt-get install -y chromium)")
    uri = tracking_uri(args.store)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lad-mlflow-ui-") as work:
        log = Path(work) / "server.log"
        with open(log, "wb") as fh:
            server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
                                       "--port", str(port), "--workers", "1"], stdout=fh, stderr=subprocess.STDOUT,
                                      cwd=work, start_new_session=True)
        try:
            problem = wait_until_healthy(server, f"{base}/health", 120)
            if problem is not None:
                sys.exit(f"error: the MLflow server {problem}: {log.read_text()[-2000:]}")
            for name, url in pages(uri, args.model, args.version, base).items():
                shoot(chromium, url, args.out / name)
                print(args.out / name)
        finally:
            stop_process_group(server)


if __name__ == "__main__":
    main()
