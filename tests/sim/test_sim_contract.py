"""The simulator speaks xapi's wire protocol to the real XenAPI client (gen_server.ml, ocaml-rpc Xmlrpc)."""

import re
import xmlrpc.client

import pytest
import XenAPI

NFS_SR = "5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01"


def test_unix_login_needs_no_password(sim, sim_login):
    """Over the Unix socket any user/password logs in (pre-authenticated) and VMs can be listed."""
    for user, password in (("root", ""), ("", ""), ("nobody", "wrong")):
        session = sim_login(sim, user=user, password=password)
        assert session.handle.startswith("OpaqueRef:")
        names = set(r["name_label"] for r in session.xenapi.VM.get_all_records().values())
        assert {"pfsense", "web", "db", "scratch"} <= names


def test_tcp_login_checks_the_scenario_password(sim, sim_login):
    """Over TCP only the scenario's user/password log in; others get SESSION_AUTHENTICATION_FAILED."""
    session = sim_login(sim, tcp=True, user="root", password="xcp-lab")
    assert len(session.xenapi.VM.get_all()) == 7
    with pytest.raises(XenAPI.Failure) as failure:
        sim_login(sim, tcp=True, user="root", password="nope")
    assert failure.value.details == ["SESSION_AUTHENTICATION_FAILED", "root",
                                     "Authentication failure"]


def test_login_accepts_two_to_four_params(sim, sim_rpc):
    """login_with_password takes 2, 3 or 4 params; 1 or 5 is a parameter count mismatch."""
    proxy = sim_rpc(sim)
    login = getattr(proxy, "session.login_with_password")
    for params in (("root", "xcp-lab"), ("root", "xcp-lab", "1.0"), ("root", "xcp-lab", "1.0", "o")):
        assert login(*params)["Status"] == "Success"
    assert login("root")["ErrorDescription"] == [
        "MESSAGE_PARAMETER_COUNT_MISMATCH", "session.login_with_password", "4", "1"]


def test_records_have_xapi_types(xenapi_session):
    """Ints arrive as decimal strings, refs as OpaqueRef, enums in exact case, domid -1 halted."""
    x = xenapi_session.xenapi
    web = x.VM.get_by_name_label("web")[0]
    record = x.VM.get_record(web)
    assert record["power_state"] == "Halted"
    assert record["domid"] == "-1" and record["order"] == "2" and record["start_delay"] == "0"
    assert record["resident_on"] == "OpaqueRef:NULL"
    assert record["other_config"]["auto_poweron"] == "true"
    assert record["is_control_domain"] is False and record["is_a_template"] is False
    host = x.host.get_all()[0]
    assert x.host.get_API_version_major(host) == "2"
    assert x.host.get_API_version_minor(host) == "21"
    assert xenapi_session.API_version == "2.21"
    dom0 = [r for r in x.VM.get_all_records().values() if r["is_control_domain"]][0]
    assert dom0["domid"] == "0" and dom0["power_state"] == "Running"
    sspn = x.network.get_by_name_label("sspn")[0]
    assert re.match(r"^xapi\d+$", x.network.get_bridge(sspn))
    assert x.network.get_PIFs(sspn) == []
    vif = x.VIF.get_record(x.VM.get_VIFs(web)[0])
    assert vif["network"] == sspn and vif["device"] == "0" and vif["currently_attached"] is False


def test_raw_reply_bytes_match_xapi(sim, raw_call, xenapi_session):
    """On the wire: Status struct, bare <value> strings, ints as strings, void as empty value."""
    handle = xenapi_session.handle
    host = xenapi_session.xenapi.host.get_all()[0]
    text = raw_call(sim, "host.get_API_version_major", handle, host)
    assert text == ('<?xml version="1.0"?><methodResponse><params><param><value><struct>'
                    '<member><name>Status</name><value>Success</value></member>'
                    '<member><name>Value</name><value>2</value></member>'
                    '</struct></value></param></params></methodResponse>')
    assert "<value></value>" in raw_call(sim, "host.enable", handle, host)
    failure = raw_call(sim, "VM.get_record", handle, "OpaqueRef:nope")
    assert ("<member><name>ErrorDescription</name><value><array><data><value>HANDLE_INVALID"
            "</value><value>VM</value><value>OpaqueRef:nope</value></data></array></value>"
            "</member>") in failure
    events = raw_call(sim, "event.from", handle, ["host"], "", 0.0)
    assert "<name>host</name><value><i4>1</i4></value>" in events
    assert "<name>timestamp</name><value>0.0</value>" in events


def test_error_shapes(sim, sim_rpc, xenapi_session):
    """HANDLE_INVALID, UUID_INVALID, SESSION_INVALID, count mismatch and unknown method look like xapi's."""
    x = xenapi_session.xenapi
    with pytest.raises(XenAPI.Failure) as failure:
        x.VM.get_record("OpaqueRef:nope")
    assert failure.value.details == ["HANDLE_INVALID", "VM", "OpaqueRef:nope"]
    with pytest.raises(XenAPI.Failure) as failure:
        x.SR.get_by_uuid("00000000-0000-0000-0000-000000000000")
    assert failure.value.details == ["UUID_INVALID", "SR", "00000000-0000-0000-0000-000000000000"]
    with pytest.raises(XenAPI.Failure) as failure:
        x.VM.start(x.VM.get_by_name_label("scratch")[0])
    assert failure.value.details == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.start", "3", "1"]
    with pytest.raises(XenAPI.Failure) as failure:
        x.VM.no_such_method()
    assert failure.value.details == ["MESSAGE_METHOD_UNKNOWN", "VM.no_such_method"]
    with pytest.raises(XenAPI.Failure) as failure:
        x.Async.VM.get_all()
    # A getter has no async mode (server_helpers.ml do_dispatch, API.response_of_fault).
    assert failure.value.details == [
        "Fault", "No async mode for this operation (rpc: Async.VM.get_all)"]
    proxy = sim_rpc(sim)
    assert getattr(proxy, "VM.get_all")("OpaqueRef:bogus") == {
        "Status": "Failure", "ErrorDescription": ["SESSION_INVALID", "OpaqueRef:bogus"]}
    assert getattr(proxy, "VM.frobnicate")("OpaqueRef:bogus")["ErrorDescription"] == [
        "SESSION_INVALID", "OpaqueRef:bogus"]


def test_keep_alive_and_rpc2(sim, sim_login):
    """One XenAPI Session sends all its calls over one kept-alive connection; /RPC2 also works."""
    before = sim.state()["connections"]
    x = sim_login(sim).xenapi
    for _ in range(5):
        x.VM.get_all()
    assert sim.state()["connections"] == before + 1
    proxy = xmlrpc.client.ServerProxy("http://127.0.0.1:%d/RPC2" % sim.port)
    assert getattr(proxy, "session.login_with_password")("root", "xcp-lab")["Status"] == "Success"


def test_alternative_wire_names_and_list_methods(sim, sim_rpc, xenapi_session):
    """Class_method works like Class.method; system.listMethods returns a bare array of names."""
    x = xenapi_session.xenapi
    assert sorted(x.VM_get_all()) == sorted(x.VM.get_all())
    methods = sim_rpc(sim).system.listMethods()
    assert {"event.from", "event_from", "VM.start", "PBD.plug", "session.login_with_password"} \
        <= set(methods)


def test_get_all_records_where_grammar(xenapi_session):
    """Where-expressions use DB columns and strings, and/or/not with xapi's precedence."""
    x = xenapi_session.xenapi

    def names(expr):
        return sorted(r["name_label"] for r in x.VM.get_all_records_where(expr).values())
    assert names('field "name__label"="web"') == ["web"]
    assert names('field "power_state"="Halted" and field "is_a_template"="false" and '
                 'not field "name__label"="scratch"') == ["db", "pfsense", "web"]
    assert names('field "name__label"="web" or field "name__label"="db"') == ["db", "web"]
    assert names('field "is_control_domain"="true"') == ["Control domain on host: xcp-lab"]
    assert names('field "order"="10"') == ["db", "db before upgrade"]
    assert names('field "is_a_snapshot"="true"') == ["db before upgrade"]
    # "not" binds looser than and/or (%right LNOT declared first): not (a or b).
    assert names('not field "name__label"="web" or field "name__label"="db"') == [
        "Control domain on host: xcp-lab", "Other install media", "db before upgrade",
        "pfsense", "scratch"]
    # and/or share one level, left-associative: (web or db) and false.
    assert names('field "name__label"="web" or field "name__label"="db" and false') == []
    assert names('(field "name__label"="web") or (true and field "name__label"="db")') == [
        "db", "web"]
    assert len(names("true")) == 7 and names("false") == []
    sr = x.SR.get_by_uuid(NFS_SR)
    pbds = x.PBD.get_all_records_where('field "SR"="%s"' % sr)
    assert [p["device_config"]["server"] for p in pbds.values()] == ["198.51.100.10"]
    with pytest.raises(XenAPI.Failure) as failure:
        x.VM.get_all_records_where('field "name_label"="web"')
    assert failure.value.details == ["INTERNAL_ERROR", "missing field", "name_label", ""]
    with pytest.raises(XenAPI.Failure) as failure:
        x.VM.get_all_records_where('field "name__label"=')
    assert failure.value.details[:2] == ["INVALID_VALUE", 'field "name__label"=']


def test_other_config_maps(xenapi_session):
    """add_to_other_config refuses an existing key (MAP_DUPLICATE_KEY); remove is idempotent."""
    x = xenapi_session.xenapi
    host = x.host.get_all()[0]
    assert x.host.add_to_other_config(host, "sspn-agent-state", "HEALTHY") == ""
    with pytest.raises(XenAPI.Failure) as failure:
        x.host.add_to_other_config(host, "sspn-agent-state", "BOOTING")
    assert failure.value.details == ["MAP_DUPLICATE_KEY", "host", "other_config", host,
                                     "sspn-agent-state"]
    assert x.host.get_other_config(host)["sspn-agent-state"] == "HEALTHY"
    x.host.remove_from_other_config(host, "sspn-agent-state")
    x.host.remove_from_other_config(host, "sspn-agent-state")
    assert "sspn-agent-state" not in x.host.get_other_config(host)
    pool = x.pool.get_all()[0]
    assert x.pool.get_master(pool) == host
    assert x.pool.get_other_config(pool)["auto_poweron"] == "true"
    assert x.session.get_this_host(xenapi_session.handle) == host


def test_message_create(sim, xenapi_session):
    """message.create(name, priority, cls, obj_uuid, body) stores a message on the host."""
    x = xenapi_session.xenapi
    host_uuid = x.host.get_uuid(x.host.get_all()[0])
    ref = x.message.create("SSPN_AGENT_DEGRADED", 3, "Host", host_uuid, "gateway silent")
    assert ref.startswith("OpaqueRef:")
    record = x.message.get_record(ref)
    assert record["priority"] == "3" and record["cls"] == "Host" and record["obj_uuid"] == host_uuid
    assert sim.state()["messages"] == [{"name": "SSPN_AGENT_DEGRADED", "priority": "3",
                                        "cls": "Host", "obj_uuid": host_uuid,
                                        "body": "gateway silent"}]
    with pytest.raises(XenAPI.Failure) as failure:
        x.message.create("X", 1, "Host", "no-such-uuid", "")
    assert failure.value.details == ["UUID_INVALID", "Host", "no-such-uuid"]


def test_socket_path_with_underscore_is_refused(tmp_path):
    """A socket path with '_' cannot work with XenAPI's UDSTransport and is refused clearly."""
    from agent.lab.xapi import Simulator
    with pytest.raises(ValueError) as error:
        Simulator("/tmp/sspn_sim/xapi")
    assert "'_'" in str(error.value) and "choose a path" in str(error.value)
