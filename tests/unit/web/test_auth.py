import pytest

from app.web.views import bearer_ok

TOKEN = "s3cret-token-of-32-characters-xx"


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (f"Bearer {TOKEN}", True),
        (None, False),
        ("", False),
        (TOKEN, False),  # the scheme is required
        (f"bearer {TOKEN}", False),
        (f"Bearer {TOKEN}x", False),
        (f"Bearer {TOKEN[:-1]}", False),
        ("Basic dXNlcjpwYXNz", False),
    ],
)
def test_bearer_token_must_match_exactly(header: str | None, ok: bool) -> None:
    assert bearer_ok(header, TOKEN) is ok


def test_no_token_configured_means_open() -> None:
    assert bearer_ok(None, None) and bearer_ok("Bearer anything", None)
