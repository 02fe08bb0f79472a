#!/usr/bin/env python3
"""FAKE nvbootctrl for tests: NVIDIA's Jetson boot-control tool cannot run off a Jetson.

Implements the verbs perch uses (`[-t rootfs|bootloader] VERB`) with state persisted in a JSON file
(--state FILE), and prints `dump-slots-info` in one of the formats NVIDIA's tool prints (--format):

  cboot  L4T 32 (JetPack 4, cboot):
           Current bootloader slot: A / Active bootloader slot: A / num_slots: 2 /
           slot: 0, retry_count: 3, status: normal, boot_successful: 1
  uefi   L4T 35/36 (JetPack 5/6, UEFI), as the Jetson Linux guide and NVIDIA's forum answers show it:
           with -t rootfs:   Current rootfs slot: A / Active rootfs slot: A / num_slots: 2 /
                             slot: 0,             retry_count: 3,             status: normal
           without (bootloader target): Current version: 35.4.1 / Capsule update status: 0 /
                             Current bootloader slot: A / Active bootloader slot: A / num_slots: 2 /
                             slot: 0,             status: normal
         No boot_successful field in either: the firmware's own notion of a good boot is not printed.

`fake-reboot` is not an nvbootctrl verb: it plays the boot firmware (choose the active slot if bootable with
retries left or successful, else fall back to the other one; spend one retry of an unproven slot), so tests
can "reboot".
"""
import json
import os
import sys

MAX_RETRY = 3


def load(path):
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    slot = lambda ok: {"retry_count": MAX_RETRY, "status": "normal" if ok else "unbootable", "boot_successful": 1 if ok else 0}
    return {"current": 0, "active": 0, "slots": [slot(True), slot(False)]}


def save(path, st):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(st, f)
    os.replace(tmp, path)


def bootable(s):
    return s["status"] == "normal" and (s["boot_successful"] == 1 or s["retry_count"] > 0)


def main():
    args = sys.argv[1:]
    if len(args) < 2 or args[0] != "--state":
        print("usage: fake_nvbootctrl.py --state FILE [--format cboot|uefi] [-t rootfs|bootloader] VERB [ARG]", file=sys.stderr)
        return 2
    path, args = args[1], args[2:]
    fmt = "cboot"
    if args[:1] == ["--format"]:
        fmt, args = args[1], args[2:]
    target = "bootloader"
    if args[:1] == ["-t"]:
        target, args = args[1], args[2:]
    verb, rest = (args[0] if args else ""), args[1:]
    st = load(path)
    if verb == "get-current-slot":
        print(st["current"])
    elif verb == "get-number-slots":
        print(2)
    elif verb == "set-active-boot-slot":
        n = int(rest[0])
        st["active"] = n
        st["slots"][n].update(status="normal", retry_count=MAX_RETRY, boot_successful=0)
    elif verb == "set-slot-as-unbootable":
        st["slots"][int(rest[0])]["status"] = "unbootable"
    elif verb == "mark-boot-successful":
        st["slots"][st["current"]].update(boot_successful=1, retry_count=MAX_RETRY)
    elif verb == "dump-slots-info" and fmt == "cboot":
        print("Current bootloader slot: %s" % "AB"[st["current"]])
        print("Active bootloader slot: %s" % "AB"[st["active"]])
        print("num_slots: 2")
        for i, s in enumerate(st["slots"]):
            print("slot: %d, retry_count: %d, status: %s, boot_successful: %d" % (i, s["retry_count"], s["status"], s["boot_successful"]))
    elif verb == "dump-slots-info" and target == "rootfs":
        print("Current rootfs slot: %s" % "AB"[st["current"]])
        print("Active rootfs slot: %s" % "AB"[st["active"]])
        print("num_slots: 2")
        for i, s in enumerate(st["slots"]):
            print("slot: %d,             retry_count: %d,             status: %s" % (i, s["retry_count"], s["status"]))
    elif verb == "dump-slots-info":
        print("Current version: 35.4.1")
        print("Capsule update status: 0")
        print("Current bootloader slot: %s" % "AB"[st["current"]])
        print("Active bootloader slot: %s" % "AB"[st["active"]])
        print("num_slots: 2")
        for i, s in enumerate(st["slots"]):
            print("slot: %d,             status: %s" % (i, s["status"]))
    elif verb == "fake-reboot":
        order = [st["active"], 1 - st["active"]]
        chosen = next((n for n in order if bootable(st["slots"][n])), None)
        if chosen is None:
            print("no bootable slot", file=sys.stderr)
            return 1
        if chosen != st["active"]:
            # The firmware gives up on a slot whose retries ran out.
            st["slots"][st["active"]]["status"] = "unbootable"
        if st["slots"][chosen]["boot_successful"] != 1:
            st["slots"][chosen]["retry_count"] -= 1
        st["current"] = chosen
        st["active"] = chosen
        print(chosen)
    else:
        print("nvbootctrl: unknown command %r" % verb, file=sys.stderr)
        return 1
    save(path, st)
    return 0


if __name__ == "__main__":
    sys.exit(main())
