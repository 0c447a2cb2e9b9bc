"""Meta strings cannot escape the header's comment, and the
header compiles under the stricter flags embedded projects use."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from export.c_header import comment_text
from export.cli import main
from export.parity import GCC_FLAGS
from runtime.policy import init_params, make_meta, save_policy
from tests.export.conftest import needs_gcc

HOSTILE_ENV_IDS = [
    "x */ static const float injected[1] = {1.0f}; /*",  # compiled cleanly before the fix
    "CartPöle-v1 ✓",  # non-ASCII: a UnicodeEncodeError traceback before the fix
    "a/*b",  # -Werror=comment: parity 'failed' before the fix
    "line\n#error injected\r\x00\x7f",
    "trigraph ??/",
]


def run_with_env_id(directory: Path, env_id: str) -> Path:
    directory.mkdir(parents=True)
    params = init_params(3, np.random.default_rng(11))
    save_policy(directory / "policy.npz", params, make_meta(hidden=3, version=2, env_id=env_id))
    return directory


@pytest.mark.parametrize("env_id", HOSTILE_ENV_IDS)
def test_comment_text_is_printable_ascii_without_delimiters(env_id: str) -> None:
    text = comment_text(env_id)
    assert all(" " <= char <= "~" for char in text)
    assert "*/" not in text and "/*" not in text and "??" not in text


@pytest.mark.parametrize("env_id", HOSTILE_ENV_IDS)
def test_any_env_id_stays_inside_the_header_comment(tmp_path: Path, env_id: str) -> None:
    run = run_with_env_id(tmp_path / "run", env_id)
    assert main([str(run), "--c"]) == 0  # export's own gcc parity check compiles it
    header = (run / "dist" / "policy.h").read_text(encoding="ascii")
    first_comment = header[: header.index("*/") + 2]
    assert header.startswith("/*") and "policy for " in first_comment
    assert "injected" not in header[len(first_comment) :]


@needs_gcc
def test_header_compiles_with_double_promotion_and_conversion_warnings(
    run_dir: Path, tmp_path: Path
) -> None:
    """-Wdouble-promotion is common on single-precision FPUs: the double sums must be explicit."""
    assert main([str(run_dir), "--c"]) == 0
    shutil.copy(run_dir / "dist" / "policy.h", tmp_path / "policy.h")
    (tmp_path / "use.c").write_text(
        '#include "policy.h"\nint main(void) { float o[4] = {0}; return policy_action(o); }\n'
    )
    extra = ["-pedantic", "-Wdouble-promotion", "-Wconversion", "-Wshadow", "-Wundef"]
    for accumulator in ([], ["-DPOLICY_ACCUMULATOR=float"]):
        command = ["gcc", *GCC_FLAGS, *extra, *accumulator, "-c", "use.c", "-o", "use.o"]
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
