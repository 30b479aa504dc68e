"""user_input.py's number types, through every number flag of every script: what a user would type for a number
that is none is refused by argparse with one line and status 2, in-process through each script's parser, and once
per script in a process of its own, as a user meets it."""
import importlib

import pytest

import user_input
from conftest import run_script

SCRIPTS = ["lenet_train.py", "lenet_eval.py", "lenet_test.py", "lenet_app.py", "lenet_export.py"]
NOT_NUMBERS = ["0", "-2", "nan", "inf", "-inf", "1e999", "text", "", "1.5", "0x10"]  # 1.5 and 0x10: not integers
TAKEN = {"positive_float": {"1.5"}, "non_negative_int": {"0"}}  # numbers each type takes among those


def number_flags(script):
    """[(flag, type's name)] of the script's flags whose type is one of user_input's."""
    parser = importlib.import_module(script[:-3]).parser
    return [(action.option_strings[0], action.type.__name__) for action in parser._actions
            if action.type in (user_input.positive_int, user_input.non_negative_int, user_input.positive_float)]


def test_the_types_take_what_they_say():
    assert [user_input.positive_int(text) for text in ("1", "20", " 7 ", "+3")] == [1, 20, 7, 3]
    assert [user_input.positive_float(text) for text in ("0.1", "1e-9", "3", "1e308")] == [0.1, 1e-9, 3.0, 1e308]
    assert [user_input.non_negative_int(text) for text in ("0", "5", str(2 ** 70))] == [0, 5, 2 ** 70]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_number_flag_refuses_what_is_no_such_number(script, capsys):
    parser = importlib.import_module(script[:-3]).parser
    flags = number_flags(script)
    assert flags  # each script has one at least
    for flag, kind in flags:
        for value in NOT_NUMBERS:
            if value in TAKEN.get(kind, ()):
                continue
            extra = ["image.png"] if script == "lenet_test.py" else []
            with pytest.raises(SystemExit) as stopped:
                parser.parse_args([*extra, f"{flag}={value}"])
            assert stopped.value.code == 2, (flag, value)
            assert capsys.readouterr().err.splitlines()[-1].endswith(
                f": error: argument {flag}: invalid {kind} value: '{value}'"), (flag, value)


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_bad_number_stops_the_script_with_one_line_and_status_2(script, tmp_path):
    flag, kind = number_flags(script)[0]
    result = run_script(script, *(["image.png"] if script == "lenet_test.py" else []), f"{flag}=inf", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"{script}: error: argument {flag}: invalid {kind} value: 'inf'"
    assert "Traceback" not in result.stderr
