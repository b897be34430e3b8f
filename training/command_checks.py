"""The trainers' command-line arguments that are not settings of a model or of training
(``--out``, ``--resume``, ``--threads``), checked
before any data is read: a typo in them used to surface only after the first epoch had trained,
which on real data can take hours, or as a traceback."""

from __future__ import annotations

import tempfile
from pathlib import Path

from service.model.bounds import MAX_TORCH_THREADS, whole_number
from service.model.checkpoint import CONFIG_FILE, foreign_entries


def check_threads(threads: int | None) -> None:
    """``None`` is torch's choice; 0 is refused rather than read as that, as other zero counts are."""
    if threads is not None:
        try:
            whole_number("--threads", threads, 1, MAX_TORCH_THREADS)
        except ValueError as exc:
            raise ValueError(f"{exc} (leave it out for torch's choice)") from None


def check_out(out: str, resume: bool) -> None:
    """``out`` names a place where a checkpoint can be written, holding an earlier run when
    ``resume`` and no trained model otherwise (it is never overwritten), nor anything else: a
    checkpoint replaces its directory.

    A checkpoint is written by staging a directory beside ``out`` and renaming it into place, so
    what must be writable is the nearest existing directory above ``out``: it is tried by making
    (and removing) a staging directory there, which also catches what permissions do not show
    (a read-only mount, /proc).
    """
    path = Path(out)
    if path.name in ("", ".", ".."):
        raise ValueError(f"--out {out!r} does not name a directory of its own: give the checkpoint "
                         "directory to write, e.g. runs/my-model")
    if path.is_symlink():  # the checkpoint would replace the link, not what it points to
        raise ValueError(f"--out {out} is a symbolic link: give the directory it stands for")
    if Path.cwd().resolve().is_relative_to(path.resolve()):  # '--out ../run' from inside run/
        raise ValueError(f"--out {out} is the working directory or holds it, which the checkpoint would "
                         "replace: give another directory")
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {out}: a file is there; the checkpoint is a directory: pass another --out")
    trained = (path / CONFIG_FILE).exists()
    if path.is_dir() and not trained and any(path.iterdir()):  # '--out runs' for '--out runs/my-model'
        raise ValueError(f"--out {out}: a directory that holds other things and no checkpoint; a checkpoint "
                         "replaces its directory, so give a new or empty one, e.g. runs/my-model")
    foreign = foreign_entries(path) if trained else []
    if foreign:  # found by the first save otherwise, after an epoch's training (a Jupyter folder)
        raise ValueError(f"--out {out}: holds {foreign[0]!r}, which is no part of a checkpoint and which "
                         "the next save would replace with it: move it out")
    if resume and not trained:
        raise ValueError(f"--resume: nothing to resume: {out} holds no earlier run (no {CONFIG_FILE}); "
                         "leave out --resume to train afresh, or pass the --out of the earlier run")
    if not resume and trained:
        raise FileExistsError(f"{out} already holds a trained model: --resume continues it; to train "
                              "afresh, pass another --out or delete it")
    nearest = path.absolute().parent
    while not nearest.exists():
        nearest = nearest.parent
    if not nearest.is_dir():
        raise ValueError(f"--out {out}: {nearest} is a file, so no directory can be made under it")
    try:
        Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=nearest)).rmdir()
    except OSError as exc:
        raise ValueError(f"--out {out}: cannot write in {nearest} ({exc.strerror or exc})") from None
