#!/usr/bin/env python3
"""An out-of-tree rivet interface: the `acme-tools` vendor interface.

rivet runs this program once per call with one JSON request on stdin:
    {"version": 1, "call": "<interface>.<operation>", "node": {...}, "args": {...}}
and reads one JSON response from stdout:
    {"ok": <result>}  or  {"error": {"kind": "retryable"|"fatal"|"invalid", "message": "..."}}
Anything written to stderr is kept in the error rivet reports. See docs/PLUGINS.md.
"""
import json
import sys


def firmware_info(node, args):
    # A real plugin would ask the BMC; this one answers from the node's name.
    return {"bmc": "2.71.0", "bios": "1.9.3", "node": node.get("name")}


def set_asset_tag(node, args):
    tag = args.get("tag")
    if not isinstance(tag, str) or not tag:
        raise ValueError("argument 'tag' must be a non-empty string")
    return {"asset_tag": tag}


def apply_profile(node, args):
    profile = args.get("profile")
    if profile not in ("low-latency", "throughput", "balanced"):
        raise ValueError(f"unknown profile {profile!r}: use low-latency, throughput or balanced")
    return {"profile": profile, "applied": True}


PASSTHRU = {"firmware_info": firmware_info, "set_asset_tag": set_asset_tag}
STEPS = {"apply_profile": apply_profile}


def handle(request):
    if request.get("version") != 1:
        return {"error": {"kind": "invalid", "message": f"unsupported protocol version {request.get('version')!r}"}}
    # Driver-level passthru concerns no node: "node" is null.
    call, node, args = request.get("call", ""), request.get("node") or {}, request.get("args", {})
    try:
        if call in ("vendor.passthru", "vendor.driver_passthru"):
            method = args.get("method")
            if method not in PASSTHRU:
                return {"error": {"kind": "invalid", "message": f"No handler for method {method}"}}
            return {"ok": PASSTHRU[method](node, args.get("args", {}))}
        if call == "vendor.deploy_step":
            step = args.get("step")
            if step not in STEPS:
                return {"error": {"kind": "invalid", "message": f"no deploy step {step}"}}
            return {"ok": STEPS[step](node, args.get("args", {}))}
        if call == "vendor.validate":
            return {"ok": None}
        return {"error": {"kind": "invalid", "message": f"call {call!r} is not supported by acme-tools"}}
    except ValueError as err:
        return {"error": {"kind": "invalid", "message": str(err)}}


if __name__ == "__main__":
    json.dump(handle(json.load(sys.stdin)), sys.stdout)
    sys.stdout.write("\n")
