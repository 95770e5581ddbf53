"""One error tree: every error tidings raises on purpose derives from TidingsError."""

from __future__ import annotations

import pytest

from catalog.bundle import BundleError
from catalog.cel import CelCompileError, CelEvalError
from catalog.exceptions import CatalogError, CatalogLoadError, RenderError
from processors.exceptions import PermanentSendError, ProcessorError, RetryableSendError
from schemas.exceptions import InvalidEventError, SchemaError, TidingsError
from streams.dlq.replay import DlqError
from streams.exceptions import (
    DependencyDown,
    FatalStageError,
    ReadStalled,
    StreamsError,
    TopicMissing,
    TransactionAborted,
)
from streams.stages.route import UnknownEventType

ROOTS = [SchemaError, CatalogError, ProcessorError, StreamsError]


@pytest.mark.parametrize("root", ROOTS)
def test_each_package_root_is_a_tidings_error(root: type[Exception]) -> None:
    assert issubclass(root, TidingsError)


@pytest.mark.parametrize(
    ("error", "root"),
    [
        (InvalidEventError, SchemaError),
        (CatalogLoadError, CatalogError),
        (RenderError, CatalogError),
        (BundleError, CatalogError),
        (CelCompileError, CatalogError),
        (CelEvalError, CatalogError),
        (RetryableSendError, ProcessorError),
        (PermanentSendError, ProcessorError),
        (FatalStageError, StreamsError),
        (DependencyDown, StreamsError),
        (TransactionAborted, StreamsError),
        (TopicMissing, StreamsError),
        (ReadStalled, StreamsError),
        (UnknownEventType, StreamsError),
        (DlqError, StreamsError),
    ],
)
def test_every_error_sits_under_its_packages_root(error: type[Exception], root: type) -> None:
    assert issubclass(error, root)


def test_retry_later_and_dead_letter_it_stay_apart() -> None:
    assert not issubclass(RetryableSendError, PermanentSendError)
    assert not issubclass(PermanentSendError, RetryableSendError)
    assert not issubclass(DependencyDown, FatalStageError)


def test_every_stage_code_is_snake_case_and_old_spellings_map_to_it() -> None:
    from schemas.codes import NO_PROVIDER, STAGE_CODES, canonical

    assert all(c == canonical(c) and "-" not in c for c in STAGE_CODES)
    assert canonical("no-provider") == canonical("No_Provider") == NO_PROVIDER


def test_dlq_selection_matches_either_spelling_both_ways() -> None:
    from streams.dlq.select import DeadLetter, Selection

    old = DeadLetter(0, 1, 0, None, b"x", [("tidings-dlq-reason", b"render-error")])
    new = DeadLetter(0, 2, 0, None, b"x", [("tidings-dlq-reason", b"render_error")])
    for typed in ("render-error", "render_error"):
        sel = Selection(reasons=(typed,))
        assert sel.matches(old) and sel.matches(new)
