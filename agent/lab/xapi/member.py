"""A pool member whose master cannot be reached: xapi's emergency mode.

Follows xen-api v26.1.4:

- ``ocaml/xapi/api_server.ml`` ``callback1``: while ``Xapi_globs.slave_emergency_mode`` is set,
  every call whose wire name is not in ``emergency_call_list`` raises the current
  ``emergency_mode_error`` before anything else (no arity or session check, no alias: the
  list holds the ``Class.message`` names of ``Datamodel.emergency_calls``). So
  ``session.login_with_password`` is refused and ``VM.start`` can never run.
- ``ocaml/xapi/xapi.ml`` start-up of a member (``Pool_role.Slave``): emergency mode is set
  "until we actually talk to the master"; ``wait_for_management_ip_address`` makes the error
  ``HOST_HAS_NO_MANAGEMENT_IP []`` while the management interface has no IP (or no physical
  port with carrier), then ``HOST_STILL_BOOTING []``;
  ``attempt_host_status_check_with_coordinator`` (Pool.hello to the master) sets
  ``HOST_MASTER_CANNOT_TALK_BACK [my_ip]`` when the master cannot reach back, or
  ``INTERNAL_ERROR [exception text]`` when the master cannot be reached at all (the exact text
  of that exception is not verified); it retries every 5 s. Once the master answers ``ok``,
  emergency mode ends.
- ``Xapi_host.is_in_emergency_mode`` is one of the emergency calls.

After start-up, a member that loses its master does not enter emergency mode: forwarded calls
retry for ever (``db_globs.ml`` ``master_connection_retry_timeout = -1``), which the simulator
does not model (clients just see their own timeouts).
"""

from .errors import XapiError

# Datamodel.emergency_calls (ocaml/idl/datamodel.ml), as wire names.
EMERGENCY_CALLS = frozenset((
    "pool.slave_reset_master", "pool.transition_to_master", "pool.ping_slave",
    "session.slave_local_login", "session.slave_local_login_with_password",
    "session.local_logout", "host.propose_new_master", "host.commit_new_master",
    "host.abort_new_master", "host.local_assert_healthy", "host.signal_networking_change",
    "host.local_management_reconfigure", "host.ha_xapi_healthcheck",
    "host.emergency_ha_disable", "host.management_disable",
    "host.get_system_status_capabilities", "host.is_in_emergency_mode",
    "host.shutdown_agent", "host.emergency_reset_server_certificate",
    "host.emergency_disable_tls_verification", "host.emergency_reenable_tls_verification",
    "host.emergency_clear_mandatory_guidance", "host.update_firewalld_service_status",
))

# sim.set_emergency(stage): the error xapi answers at each stage of a member's start-up.
STAGES = {
    "no-management-ip": lambda ip: ["HOST_HAS_NO_MANAGEMENT_IP"],
    "still-booting": lambda ip: ["HOST_STILL_BOOTING"],
    "cannot-talk-back": lambda ip: ["HOST_MASTER_CANNOT_TALK_BACK", ip],
    "master-unreachable": lambda ip: [
        "INTERNAL_ERROR", 'Unix.Unix_error(Unix.ECONNREFUSED, "connect", "")'],
}


class PoolMember(object):
    """Emergency mode mixed into Simulator."""

    def _init_member(self):
        stage = self.scenario.host.emergency
        self.emergency_error = None
        if stage:
            self.set_emergency(stage)

    def set_emergency(self, stage):
        """Enter (or move to another stage of) emergency mode: one of STAGES; "" leaves it."""
        if not stage:
            self.emergency_error = None
            return
        if stage not in STAGES:
            raise XapiError("INVALID_VALUE", "stage", stage, "known: " + ", ".join(sorted(STAGES)))
        address = self.db.get("host", self.index.host, "address")
        self.emergency_error = STAGES[stage](address)

    def emergency_check(self, name):
        """api_server.ml callback1: refuse a non-emergency call while in emergency mode."""
        error = self.emergency_error
        if error is not None and name not in EMERGENCY_CALLS:
            raise XapiError(*error)

    def is_in_emergency_mode(self):
        """Xapi_host.is_in_emergency_mode."""
        return self.emergency_error is not None
