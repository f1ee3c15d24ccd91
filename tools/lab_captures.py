"""Real attack traffic made here, as nfcapd, and what zeekml notices of it.

The issue's held-out checks name captures that are not in ``../shared/data``: DDoS
events, SSH/FTP/HTTP brute force and nmap scans as nfcapd. This tool makes such captures
on this machine with the real tools, between two network namespaces joined by a veth
pair (an "internet" attacker 198.51.100.23 and a server 192.168.50.10/.11 running
sshd, vsftpd and an HTTP login form that refuses every password):

* ``http-bf``, ``ssh-bf``, ``ftp-bf``: hydra against the form, sshd and vsftpd
* ``nmap-syn``, ``nmap-connect``, ``nmap-udp``, ``nmap-sweep``: nmap scans
* ``synflood``, ``udpflood``: hping3 floods from random (spoofed) sources
* since stop 37: ``icmpflood``, ``ackflood``, ``fragflood`` (spoofed floods),
  ``reflect-few``/``reflect-many`` (8 or 60 fixed reflectors' replies), ``synack-slow``
  (SYN-ACKs from random sources, 5 a second), ``nmap-ping`` (a ping sweep of the /24), ``nmap-fin``, ``nmap-xmas``, ``nmap-null``,
  ``nmap-version`` and ``ssh-bf-slow`` (one hydra task)

Each is captured with tcpdump on the server side, turned into nfcapd files by
``nfpcapd`` (the NetFlow a router would export: one record per direction) and scored
by ``zeekml score --all`` with the bundled models. Printed per capture: flows, the share
of flows any model flagged (score over its threshold), per model, and the notices
written with the default suppression key (``--suppress-by host``) and by originator.

Needs root (network namespaces) and ``apt-get install hydra nmap hping3 tcpdump
openssh-server vsftpd nfdump``. Usage::

    python tools/lab_captures.py --out /tmp/zeekml-lab [--only http-bf nmap-syn]

Nothing here is used by the tests: the captures are made where the tools run, and are
kept in ``--out`` (pcap and nfcapd per capture) to be read again.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

SRV, ATK = "zeekml-lab-srv", "zeekml-lab-atk"
SERVER, SERVER2, ATTACKER = "192.168.50.10", "192.168.50.11", "198.51.100.23"
USER = "zeekmllab"
NEEDS = ("ip", "hydra", "nmap", "hping3", "tcpdump", "nfpcapd", "nfdump", "zeekml")

LOGIN_SERVER = '''
import http.server, socketserver
PAGE = b"<html><body><form method=post action=/login><input name=user>" \\
       b"<input name=pass type=password></form></body></html>"
FAIL = b"<html><body>Login failed</body></html>"
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def reply(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self.reply(PAGE)
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.reply(FAIL)
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    def handle_error(self, request, client_address):
        pass  # a scan's reset connection
S(("0.0.0.0", 80), H).serve_forever()
'''

VSFTPD = """listen=YES
listen_ipv6=NO
anonymous_enable=NO
local_enable=YES
pam_service_name=vsftpd
secure_chroot_dir=/var/run/vsftpd/empty
seccomp_sandbox=NO
max_per_ip=50
max_clients=200
"""


def sh(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), check=check, **kw)


def in_ns(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


def attacks(work: Path) -> dict[str, tuple[str, list[str], float]]:
    """name -> (capture filter, attacker command, timeout seconds)."""
    pw = str(work / "passwords.txt")
    pw60 = str(work / "passwords60.txt")
    form = "/login:user=^USER^&pass=^PASS^:F=Login failed"
    return {
        "http-bf": ("tcp port 80", ["hydra", "-I", "-l", USER, "-P", pw, "-t", "4", SERVER,
                                    "http-post-form", form], 300),
        "ftp-bf": (f"host {ATTACKER} and not port 80 and not port 22",
                   ["hydra", "-I", "-l", USER, "-P", pw60, "-t", "4", f"ftp://{SERVER}"], 300),
        "ssh-bf": ("tcp port 22", ["hydra", "-I", "-l", USER, "-P", pw60, "-t", "4",
                                   f"ssh://{SERVER}"], 180),
        "nmap-syn": (f"host {ATTACKER}", ["nmap", "-n", "-Pn", "-sS", "-T4", "-p1-2000",
                                          SERVER], 300),
        "nmap-connect": (f"host {ATTACKER}", ["nmap", "-n", "-Pn", "-sT", "-T4",
                                              "--top-ports", "1000", SERVER2], 300),
        "nmap-udp": (f"host {ATTACKER}", ["nmap", "-n", "-Pn", "-sU", "-T4", "--max-retries",
                                          "1", "--top-ports", "200", SERVER], 300),
        "nmap-sweep": (f"host {ATTACKER}", ["nmap", "-n", "-Pn", "-sS", "-T4", "-p",
                                            "22,80,443,445,3389", f"{SERVER}-11"], 120),
        "synflood": ("tcp port 80", ["hping3", "-S", "-p", "80", "--rand-source", "-i", "u300",
                                     "-c", "15000", SERVER], 120),
        "udpflood": ("udp port 53", ["hping3", "--udp", "-p", "53", "--rand-source", "-i",
                                     "u300", "-c", "15000", "-d", "64", SERVER], 120),
        # more kinds, none of them tuned for (stop 37): an ICMP echo flood, a TCP ACK
        # flood, fragmented UDP, reflections through few / many reflectors, a slow
        # SYN-ACK reflection, nmap's other scans and a slower SSH guesser
        "icmpflood": ("icmp", ["hping3", "--icmp", "--rand-source", "-i", "u300", "-c",
                               "15000", SERVER], 120),
        "ackflood": ("tcp port 80", ["hping3", "-A", "-p", "80", "--rand-source", "-i",
                                     "u300", "-c", "15000", SERVER], 120),
        "fragflood": ("udp or icmp or (ip[6:2] & 0x1fff != 0)",
                      ["hping3", "--udp", "-p", "123", "--rand-source", "-d", "3000", "-i",
                       "u1000", "-c", "5000", SERVER], 120),
        "reflect-few": ("udp", reflect(SERVER, 8, 53, "u50000", 600), 120),
        "reflect-many": ("udp", reflect(SERVER, 60, 123, "u200000", 150), 120),
        "synack-slow": ("tcp", ["hping3", "-S", "-A", "-s", "80", "-k", "-p", "++20000",
                                "--rand-source", "-i", "u200000", "-c", "300", SERVER], 120),
        "nmap-ping": (f"host {ATTACKER}", ["nmap", "-n", "-sn", "--send-ip",
                                           "192.168.50.0/24"], 120),
        "nmap-xmas": (f"host {ATTACKER}", ["nmap", "-n", "-Pn", "-sX", "-T4", "-p1-1000",
                                           SERVER], 300),
        "nmap-null": (f"host {ATTACKER}", ["nmap", "-n", "-Pn", "-sN", "-T4", "-p1-1000",
                                           SERVER], 300),
        "nmap-fin": (f"host {ATTACKER}", ["nmap", "-n", "-Pn", "-sF", "-T4", "-p1-1000",
                                          SERVER], 300),
        "nmap-version": (f"host {ATTACKER}", ["nmap", "-n", "-Pn", "-sV", "-T4",
                                              "--top-ports", "100", SERVER], 300),
        "ssh-bf-slow": ("tcp port 22", ["hydra", "-I", "-l", USER, "-P", pw60, "-t", "1",
                                        "-W", "3", f"ssh://{SERVER}"], 240),
    }


def reflect(victim: str, reflectors: int, port: int, gap: str, count: int) -> list[str]:
    """A reflection attack as the victim sees it: ``reflectors`` fixed addresses (spoofed
    from the documentation range 203.0.113.0/24) sending replies from service ``port`` to
    the victim's random ports, one hping3 per reflector, all at once."""
    one = (f"hping3 --udp -k -s {port} -p ++30000 -d 1200 -i {gap} -c {count} "
           f"-a 203.0.113.{{}} {victim} >/dev/null 2>&1 &")
    loop = " ".join(one.format(i) for i in range(1, reflectors + 1))
    return ["sh", "-c", f"{loop} wait"]


@contextlib.contextmanager
def lab(work: Path) -> Iterator[None]:
    """The two namespaces, the link, and the server's services; torn down after."""
    procs: list[subprocess.Popen] = []
    for ns in (SRV, ATK):
        sh("ip", "netns", "del", ns, check=False, stderr=subprocess.DEVNULL)
    try:
        sh("ip", "netns", "add", SRV)
        sh("ip", "netns", "add", ATK)
        sh("ip", "link", "add", "zlab-s", "type", "veth", "peer", "name", "zlab-a")
        sh("ip", "link", "set", "zlab-s", "netns", SRV)
        sh("ip", "link", "set", "zlab-a", "netns", ATK)
        for addr in (SERVER, SERVER2):
            sh("ip", "-n", SRV, "addr", "add", f"{addr}/24", "dev", "zlab-s")
        sh("ip", "-n", ATK, "addr", "add", f"{ATTACKER}/32", "dev", "zlab-a")
        for ns, dev in ((SRV, "zlab-s"), (ATK, "zlab-a")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", SRV, "route", "add", "default", "dev", "zlab-s")
        sh("ip", "-n", ATK, "route", "add", "192.168.50.0/24", "dev", "zlab-a")
        # every other address of the /24 answers ARP for nobody: fixed neighbour entries
        # put the attacker's packets to them on the wire (a sweep then meets silence, as
        # from hosts that are down, instead of dying in ARP, which no flow export sees)
        mac = sh("ip", "-n", SRV, "-br", "link", "show", "zlab-s", capture_output=True,
                 text=True).stdout.split()[2]
        for i in range(1, 255):
            if f"192.168.50.{i}" not in (SERVER, SERVER2):
                sh("ip", "-n", ATK, "neigh", "replace", f"192.168.50.{i}", "lladdr", mac,
                   "dev", "zlab-a", "nud", "permanent")
        # a user whose password is in no list (every attempt fails, as in a real attack)
        if sh("id", USER, check=False, capture_output=True).returncode:
            sh("useradd", "-M", USER)
        sh("chpasswd", input=f"{USER}:{secrets.token_urlsafe(24)}\n".encode())
        (work / "login_server.py").write_text(LOGIN_SERVER)
        (work / "vsftpd.conf").write_text(VSFTPD)
        Path("/run/sshd").mkdir(exist_ok=True)
        Path("/var/run/vsftpd/empty").mkdir(parents=True, exist_ok=True)
        sh("ssh-keygen", "-A", stdout=subprocess.DEVNULL)
        procs.append(subprocess.Popen(in_ns(SRV, sys.executable, str(work / "login_server.py"))))
        procs.append(subprocess.Popen(in_ns(SRV, "vsftpd", str(work / "vsftpd.conf"))))
        procs.append(subprocess.Popen(in_ns(
            SRV, "/usr/sbin/sshd", "-D", "-o", "UseDNS=no", "-o", "UsePAM=no",
            "-o", "MaxStartups=100", "-o", "MaxAuthTries=2", "-o", "LoginGraceTime=20")))
        time.sleep(1.5)
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
        for ns in (SRV, ATK):
            sh("ip", "netns", "del", ns, check=False, stderr=subprocess.DEVNULL)


def capture(name: str, flt: str, cmd: list[str], timeout: float, work: Path) -> Path:
    """Run one attack under tcpdump; its pcap turned into nfcapd files: the directory."""
    pcap = work / f"{name}.pcap"
    dump = subprocess.Popen(in_ns(SRV, "tcpdump", "-i", "zlab-s", "-s", "200", "-U", "-w",
                                  str(pcap), flt), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    with open(work / f"{name}.out", "wb") as log:
        try:
            sh(*in_ns(ATK, *cmd), check=False, stdout=log, stderr=subprocess.STDOUT,
               timeout=timeout)
        except subprocess.TimeoutExpired:
            pass  # a slow service (sshd's failure delay): what was captured is the capture
    time.sleep(2.0)
    dump.send_signal(signal.SIGINT)
    dump.wait(timeout=10)
    out = work / name / "nfcapd"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    sh("nfpcapd", "-r", str(pcap), "-w", str(out), stdout=subprocess.DEVNULL,
       stderr=subprocess.DEVNULL, env={**os.environ, "TZ": "UTC"})
    return out


def read_verdicts(path: Path) -> pd.DataFrame:
    lines = path.read_text().splitlines()
    fields = next(ln for ln in lines if ln.startswith("#fields")).split("\t")[1:]
    body = "\n".join(ln for ln in lines if not ln.startswith("#"))
    return pd.read_csv(io.StringIO(body), sep="\t", names=fields, dtype=str,
                       keep_default_na=False)


def report(name: str, folder: Path, work: Path) -> dict[str, object]:
    allv = work / f"{name}.all.log"
    sh("zeekml", "score", "--all", "--out", str(allv), str(folder),
       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    df = read_verdicts(allv)
    flows = df["uid"].nunique()
    hit = df[df["decision"] != "below"]
    row: dict[str, object] = {"capture": name, "flows": flows,
                              "noticed": f"{hit['uid'].nunique() / max(flows, 1):.1%}"}
    for model, g in df.groupby("model"):
        h = g[g["decision"] != "below"]
        top = h["verdict"].value_counts()
        row[str(model)] = (f"{len(h) / max(len(g), 1):.0%} {top.index[0]}" if len(top) else "0%")
    for by in ("host", "orig"):
        out = work / f"{name}.notices.{by}.log"
        sh("zeekml", "score", "--suppress-by", by, "--out", str(out), str(folder),
           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        row[f"notices by {by}"] = len(read_verdicts(out))
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/zeekml-lab"))
    ap.add_argument("--only", nargs="*", default=None, help="capture names to make")
    ap.add_argument("--score-only", action="store_true",
                    help="score the captures already in --out, make nothing")
    args = ap.parse_args()
    missing = [b for b in NEEDS if shutil.which(b) is None]
    if missing or (not args.score_only and os.geteuid() != 0):
        print(f"needs root and: {' '.join(missing) or '(all present)'}; apt-get install "
              "hydra nmap hping3 tcpdump openssh-server vsftpd nfdump", file=sys.stderr)
        return 2
    work = args.out.resolve()
    work.mkdir(parents=True, exist_ok=True)
    words = ["password", "123456", "admin", "letmein", "qwerty", "welcome", "monkey"]
    words += [secrets.token_hex(4) for _ in range(393)]
    (work / "passwords.txt").write_text("\n".join(words) + "\n")
    (work / "passwords60.txt").write_text("\n".join(words[:60]) + "\n")
    todo = {k: v for k, v in attacks(work).items() if not args.only or k in args.only}
    if not args.score_only:
        with lab(work):
            for name, (flt, cmd, timeout) in todo.items():
                print(f"capturing {name} ...", file=sys.stderr)
                capture(name, flt, cmd, timeout, work)
    rows = [report(n, work / n / "nfcapd", work) for n in todo if (work / n / "nfcapd").is_dir()]
    print(pd.DataFrame(rows).fillna("-").to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
