"""gateway/auth.py: the one bearer-token parser and the admin-key check."""

from __future__ import annotations

import pytest

from gateway.auth import bearer_token, is_admin, require_admin
from gateway.errors import PermissionDenied


@pytest.mark.parametrize(("header", "token"), [
    ("Bearer tdm-abc", "tdm-abc"),
    ("bearer tdm-abc", "tdm-abc"),
    ("BEARER   tdm-abc  ", "tdm-abc"),
    ("Bearer", None),
    ("Bearer    ", None),
    ("Basic dXNlcjpwYXNz", None),
    ("tdm-abc", None),
    ("", None),
    (None, None),
])
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_admin_check() -> None:
    assert is_admin("s3cret", "s3cret")
    assert not is_admin("s3cret-not", "s3cret")
    assert not is_admin(None, "s3cret") and not is_admin("", "s3cret")
    assert not is_admin("anything", None) and not is_admin("", "")  # no admin key configured: nobody is admin


def test_require_admin_names_why() -> None:
    require_admin("s3cret", "s3cret")
    with pytest.raises(PermissionDenied, match="disabled"):
        require_admin("s3cret", None)
    with pytest.raises(PermissionDenied, match="need the admin key"):
        require_admin(None, "s3cret")
