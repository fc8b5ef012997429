"""Which board this is, from files the kernel and vendors publish, and device tools run safely.

Hardware detection (`devices`), Jetson power modes (`power_modes`) and the Jetson and Raspberry Pi sensors
all ask these questions; they live here, below the sensors, so hardware never imports a sensor.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def device_tree_model(root: str | Path = "/") -> str | None:
    """The device tree's model string (`/proc/device-tree/model`: "NVIDIA Jetson Orin Nano ...",
    "Raspberry Pi 5 ..."), or None on hosts without a device tree (x86 servers)."""
    try:
        return (Path(root) / "proc/device-tree/model").read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return None


def jetson_model(root: str | Path = "/") -> str | None:
    """The Jetson model name if this is a Jetson (device-tree model or nv_tegra_release), else None."""
    model = device_tree_model(root)
    if model and ("jetson" in model.lower() or "nvidia" in model.lower()):
        return model
    if (Path(root) / "etc/nv_tegra_release").exists():
        return "NVIDIA Jetson (model unknown)"
    return None


def run_command(argv: list[str], stdin: str = "", timeout_s: float = 5.0) -> tuple[int, str]:
    """(exit code, stdout + stderr) of a device tool run from an argv list, never a shell; a missing binary
    is exit code 127, a timeout or OS error 1. `stdin` answers a tool's prompts."""
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError:
        return 127, f"{argv[0]}: not found"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, str(exc)
    return done.returncode, (done.stdout or "") + (done.stderr or "")
