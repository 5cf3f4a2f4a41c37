"Shared bits of the benchmark scripts: machine description and result writing."
import json, os, platform, subprocess, sys, time
from pathlib import Path
from sma_kit.checkpoint import atomic_write

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    "What the numbers were measured on."
    cpu = ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    info = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    try:
        import torch
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    except ImportError:
        pass
    return info


def data_dir() -> Path:
    d = os.environ.get("SMA_DATA_DIR")
    if not d or not Path(d).is_dir():
        sys.exit("set SMA_DATA_DIR to the folder with the real corpora (e.g. ../shared/data)")
    return Path(d)


def write(name: str, obj: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    p = RESULTS / f"{name}.json"
    atomic_write(p, json.dumps(obj, indent=2) + "\n")   # a killed run leaves the previous results whole
    print(f"wrote {p}")
    return p
