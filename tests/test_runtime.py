"""TensorFlow defaults set in the environment before TensorFlow loads (taylorglo_tf.runtime)."""

import os

import pytest

from taylorglo_tf import runtime


@pytest.fixture
def clean_environment(monkeypatch):
    monkeypatch.delenv(runtime.ONEDNN_ENV, raising=False)
    monkeypatch.delenv(runtime.DEFAULTED_ENV, raising=False)


def test_onednn_is_turned_on_by_default_and_marked_as_our_default(clean_environment):
    runtime.set_tensorflow_defaults()
    assert os.environ[runtime.ONEDNN_ENV] == "1"
    assert not runtime.chosen_by_user(runtime.ONEDNN_ENV)
    runtime.set_tensorflow_defaults()  # again (a child process, a second command in one process)
    assert not runtime.chosen_by_user(runtime.ONEDNN_ENV)


def test_a_users_onednn_setting_is_kept_and_known_as_theirs(clean_environment, monkeypatch):
    monkeypatch.setenv(runtime.ONEDNN_ENV, "0")
    runtime.set_tensorflow_defaults()
    assert os.environ[runtime.ONEDNN_ENV] == "0"
    assert runtime.chosen_by_user(runtime.ONEDNN_ENV)


def test_an_unset_variable_is_nobodys_choice(clean_environment):
    assert not runtime.chosen_by_user(runtime.ONEDNN_ENV)
