"""Which errors exit 2: only the user's (argparse's refusals, UsageError); a bug is a bug."""
import pytest
from botocore.exceptions import ClientError

from pipeline import cli, commands
from pipeline.errors import UsageError


def _run_with(monkeypatch, error):
    def command(target):
        raise error

    monkeypatch.setitem(cli.COMMANDS, "iam-policy", (command, "", []))
    return cli.main(["iam-policy"])


def test_a_usage_error_exits_2_with_its_message(monkeypatch, capsys):
    assert _run_with(monkeypatch, UsageError("no such file: x.png")) == 2
    assert capsys.readouterr().err == "error: no such file: x.png\n"


def test_a_value_error_is_a_bug_not_a_usage_error(monkeypatch):
    with pytest.raises(ValueError, match="a bug"):
        _run_with(monkeypatch, ValueError("a bug"))


def test_aws_errors_exit_by_their_codes(monkeypatch, capsys):
    refused = ClientError({"Error": {"Code": "ValidationException", "Message": "bad"}}, "X")
    assert _run_with(monkeypatch, refused) == 2
    failed = ClientError({"Error": {"Code": "InternalFailure", "Message": "oops"}}, "X")
    assert _run_with(monkeypatch, failed) == 1
    assert "InternalFailure: oops" in capsys.readouterr().err


@pytest.mark.parametrize("response, refused", [
    ({"Error": {"Code": "ModelError", "Message": "Received client error (400)"},
      "OriginalStatusCode": 400, "OriginalMessage": "blank"}, True),
    ({"Error": {"Code": "ModelError", "Message": "Received server error (500)"},
      "OriginalStatusCode": 500}, False),
    ({"Error": {"Code": "ModelError", "Message": "a client error, says the text"}}, False),
    ({"Error": {"Code": "ValidationError", "Message": "x"}, "OriginalStatusCode": 400}, False),
])
def test_a_model_refusal_is_known_by_its_original_status_code(response, refused):
    assert commands._refused_by_the_model(ClientError(response, "InvokeEndpoint")) is refused
