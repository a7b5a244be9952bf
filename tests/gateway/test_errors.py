"""gateway/errors.py: ``retryable`` is declared by the error class tree (dispatch reads it, never probes for it)."""

from __future__ import annotations

import pytest

from gateway.dispatch import is_retryable
from gateway.errors import (
    AuthenticationError,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    BudgetExceeded,
    InvalidRequest,
    LimitStoreUnavailable,
    PromptTooLarge,
    RateLimited,
    TandemError,
)


@pytest.mark.parametrize("cls", [BackendError, BackendUnavailable, BackendTimeout, LimitStoreUnavailable])
def test_backend_failures_are_retryable_by_class(cls: type[BackendError]) -> None:
    assert cls.retryable is True
    e = cls("boom")
    assert e.retryable is True and is_retryable(e)


@pytest.mark.parametrize("err", [TandemError("x"), InvalidRequest("x"), PromptTooLarge("x"), AuthenticationError("x"),
                                 RateLimited("x", retry_after=1), BudgetExceeded("x", retry_after=1)])
def test_client_mistakes_and_limits_are_never_retryable(err: TandemError) -> None:
    assert err.retryable is False and not is_retryable(err)


def test_one_failure_can_say_it_is_not_retryable_without_changing_its_class() -> None:
    refused = BackendError("backend 'a' refused the call (401): bad key", retryable=False)
    assert refused.retryable is False and not is_retryable(refused)
    assert BackendError.retryable is True and BackendError("later").retryable is True
    assert BackendUnavailable("rate limited", retryable=False).retryable is False


def test_retryable_is_not_part_of_the_error_body() -> None:
    body = BackendError("boom", retryable=False, param="model").to_body()
    assert body == {"error": {"message": "boom", "type": "api_error", "param": "model", "code": "upstream_error"}}


def test_things_that_are_not_tandem_errors_are_not_retried() -> None:
    assert not is_retryable(ValueError("x"))
