"""The dom0 RPM: built from the bundle by packaging/build_rpm.py, checked by packaging/check_rpm.py.

check_rpm runs in CI after `make rpm` too (.ci/run); here it checks an RPM built from this
session's bundle: the file list and modes, agent.toml as %config(noreplace), the scriptlets
(reload systemd, never start on install) and a scratch-root install, reinstall and removal.
"""

import os
import shutil
import subprocess
import sys

import pytest

from tests.ops.conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "packaging"))
import build_rpm  # noqa: E402
import check_rpm  # noqa: E402
import clidoc  # noqa: E402

pytestmark = [pytest.mark.bundle, pytest.mark.skipif(
    shutil.which("rpmbuild") is None, reason="rpmbuild is not installed (apt-get install -y rpm)")]


@pytest.fixture(scope="module")
def package(built, tmp_path_factory):
    """The RPM built from the session's bundle."""
    out = str(tmp_path_factory.mktemp("rpm"))
    return build_rpm.build(os.path.dirname(built["pyz"]), out)


def test_rpm_contents_scriptlets_and_scratch_install(package):
    """Every check of packaging/check_rpm.py passes on the built RPM."""
    assert os.path.basename(package) == build_rpm.rpm_name()
    assert check_rpm.check(package) == []


def test_rpm_payload_is_readable_by_dom0_rpm(package):
    """gzip payload and no rpmlib feature newer than CentOS 7's rpm 4.11 knows."""
    out = subprocess.check_output(["rpm", "-qp", "--qf", "%{PAYLOADCOMPRESSOR}", package],
                                  universal_newlines=True)
    assert out == "gzip"
    requires = subprocess.check_output(["rpm", "-qp", "--requires", package],
                                       universal_newlines=True).splitlines()
    features = sorted(r.split()[0] for r in requires if r.startswith("rpmlib("))
    assert set(features) <= {"rpmlib(CompressedFileNames)", "rpmlib(FileDigests)",
                             "rpmlib(PayloadFilesHavePrefix)"}, features


def test_scriptlet_checker_catches_a_start_on_install(tmp_path):
    """The scriptlet check can fail: a %post that starts the agent is seen doing so."""
    ran = check_rpm.run_scriptlet("systemctl daemon-reload\nsystemctl enable --now sspn-agent\n",
                                  1, str(tmp_path))
    assert ran == ["daemon-reload", "enable --now sspn-agent"]


def test_man_page_and_completion_follow_the_parser():
    """agent(1) documents every dom0 command and the status exit codes; the completion offers
    every command and trace's --since; neither mentions `bundle` or `diagram`."""
    page = clidoc.manpage(date="2026-01-01")
    for name, _sub, _help in clidoc.commands():
        assert ".SS agent %s" % name in page, name
    assert "DEGRADED" in page and "SIGHUP" in page
    completion = clidoc.completion()
    assert "\\-\\-since" in page and "--since" in completion
    assert ".SS agent bundle" not in page and ".SS agent diagram" not in page
    assert "diagram" not in completion and "bundle" not in completion


def test_completion_completes_in_bash(tmp_path):
    """Sourced into bash, the completion offers the commands and a command's options."""
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    script = tmp_path / "agent.bash"
    script.write_text(clidoc.completion())

    def complete(*words):
        code = ('source "%s"; COMP_WORDS=(%s); COMP_CWORD=%d; _sspn_agent; echo "${COMPREPLY[@]}"'
                % (script, " ".join("'%s'" % w for w in words), len(words) - 1))
        return subprocess.check_output(["bash", "-c", code], universal_newlines=True).split()

    assert complete("agent", "st") == ["status"]
    assert complete("agent", "trace", "--s") == ["--since"]
    assert "--json" in complete("sspn-agent", "status", "--")
