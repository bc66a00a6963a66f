"""Syslog parsing as a specification: what real senders put on the wire -> the stored event.

Each table row is one wire sample; the expected value is the whole event, so a stray or
missing field fails the row. Captured samples say where they came from.
"""

from __future__ import annotations

import calendar

import pytest

from logpipe.parse.body import BodyEvent
from logpipe.parse.framing import StreamFramer, Truncated
from logpipe.parse.syslog import SyslogParser, format_time

# The receive time used throughout: 2026-11-21T12:00:00.5Z.
RECV = calendar.timegm((2026, 11, 21, 12, 0, 0)) + 0.5
RECV_TEXT = "2026-11-21T12:00:00.500000Z"
IP = "10.0.3.7"


def utc(year, month, day, hour=0, minute=0, second=0):
    return calendar.timegm((year, month, day, hour, minute, second))


def parse(line: bytes, recv: float = RECV, source_ip: str | None = IP, **options) -> dict:
    return SyslogParser(**options).parse(line, recv, source_ip)


def header(pri: int) -> dict:
    """The facility/severity/level fields of a PRI, spelled out once."""
    facilities = ["kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp",
                  "cron", "authpriv", "ftp", "ntp", "security", "console", "solaris-cron"]
    facilities += [f"local{i}" for i in range(8)]
    severities = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"]
    levels = ["emerg", "alert", "crit", "error", "warn", "notice", "info", "debug"]
    return {"facility": facilities[pri >> 3], "severity": severities[pri & 7],
            "level": levels[pri & 7]}


RFC5424_CASES = [
    # RFC 5424 section 6.5, example 1 (BOM before MSG).
    pytest.param(
        b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - "
        b"\xef\xbb\xbf'su root' failed for lonvick on /dev/pts/8",
        {"_time": "2003-10-11T22:14:15.003000Z",
         "_msg": "'su root' failed for lonvick on /dev/pts/8",
         "hostname": "mymachine.example.com", "app_name": "su", "msg_id": "ID47",
         **header(34), "source_ip": IP},
        id="rfc5424-example1-bom"),
    # Example 2: microseconds and a negative offset, NILVALUE MSGID and SD.
    pytest.param(
        b"<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - "
        b"%% It's time to make the do-nuts.",
        {"_time": "2003-08-24T12:14:15.000003Z", "_msg": "%% It's time to make the do-nuts.",
         "hostname": "192.0.2.1", "app_name": "myproc", "proc_id": "8710",
         **header(165), "source_ip": IP},
        id="rfc5424-example2-offset"),
    # Example 3: structured data and a message.
    pytest.param(
        b'<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 '
        b'[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] '
        b"\xef\xbb\xbfAn application event log entry...",
        {"_time": "2003-10-11T22:14:15.003000Z", "_msg": "An application event log entry...",
         "hostname": "mymachine.example.com", "app_name": "evntslog", "msg_id": "ID47",
         **header(165), "exampleSDID@32473.iut": "3",
         "exampleSDID@32473.eventSource": "Application",
         "exampleSDID@32473.eventID": "1011", "source_ip": IP},
        id="rfc5424-example3-sd"),
    # Example 4: two SD elements and no MSG at all.
    pytest.param(
        b'<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 '
        b'[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]'
        b'[examplePriority@32473 class="high"]',
        {"_time": "2003-10-11T22:14:15.003000Z", "_msg": "",
         "hostname": "mymachine.example.com", "app_name": "evntslog", "msg_id": "ID47",
         **header(165), "exampleSDID@32473.iut": "3",
         "exampleSDID@32473.eventSource": "Application",
         "exampleSDID@32473.eventID": "1011", "examplePriority@32473.class": "high",
         "source_ip": IP},
        id="rfc5424-example4-two-elements-no-msg"),
    # RFC 5424 6.2.3.1 timestamp examples.
    pytest.param(b"<13>1 1985-04-12T23:20:50.52Z h a - - - x",
                 {"_time": "1985-04-12T23:20:50.520000Z", "_msg": "x", "hostname": "h",
                  "app_name": "a", **header(13), "source_ip": IP},
                 id="rfc5424-stamp-centiseconds"),
    pytest.param(b"<13>1 1985-04-12T19:20:50.52-04:00 h a - - - x",
                 {"_time": "1985-04-12T23:20:50.520000Z", "_msg": "x", "hostname": "h",
                  "app_name": "a", **header(13), "source_ip": IP},
                 id="rfc5424-stamp-offset"),
    # Nanoseconds are beyond RFC 5424 (max 6 digits) but sent by some Go loggers: truncated.
    pytest.param(b"<13>1 2026-11-21T10:00:00.123456789+05:30 h a - - - x",
                 {"_time": "2026-11-21T04:30:00.123456Z", "_msg": "x", "hostname": "h",
                  "app_name": "a", **header(13), "source_ip": IP},
                 id="rfc5424-stamp-nanoseconds-truncated"),
    pytest.param(b"<13>1 - - - - - -",
                 {"_time": RECV_TEXT, "_msg": "", **header(13), "source_ip": IP},
                 id="rfc5424-all-nil"),
    pytest.param(b"<13>1 - - - - - - ",
                 {"_time": RECV_TEXT, "_msg": "", **header(13), "source_ip": IP},
                 id="rfc5424-all-nil-empty-msg"),
    # util-linux 2.38.1: logger --rfc5424 -t myapp -p local3.warning -n 127.0.0.1 (UDP).
    pytest.param(
        b'<156>1 2026-11-21T15:51:58.910961+00:00 vm myapp - - '
        b'[timeQuality tzKnown="1" isSynced="0"] hello world',
        {"_time": "2026-11-21T15:51:58.910961Z", "_msg": "hello world", "hostname": "vm",
         "app_name": "myapp", **header(156), "timeQuality.tzKnown": "1",
         "timeQuality.isSynced": "0", "source_ip": IP},
        id="logger-rfc5424"),
    # logger --rfc5424=notq,nohost
    pytest.param(b"<13>1 2026-11-21T15:51:58.913375+00:00 - myapp - - - hello",
                 {"_time": "2026-11-21T15:51:58.913375Z", "_msg": "hello",
                  "app_name": "myapp", **header(13), "source_ip": IP},
                 id="logger-rfc5424-nohost-notq"),
    # logger --rfc5424 --msgid ID7 --sd-id zoo@123 --sd-param 'tiger="a \"b\" c\]d"'
    pytest.param(
        b'<13>1 2026-11-21T15:52:01.182679+00:00 vm app - ID7 '
        b'[timeQuality tzKnown="1" isSynced="0"][zoo@123 tiger="a \\"b\\" c\\]d"] sd test',
        {"_time": "2026-11-21T15:52:01.182679Z", "_msg": "sd test", "hostname": "vm",
         "app_name": "app", "msg_id": "ID7", **header(13), "timeQuality.tzKnown": "1",
         "timeQuality.isSynced": "0", "zoo@123.tiger": 'a "b" c]d', "source_ip": IP},
        id="logger-rfc5424-sd-escapes"),
    # rsyslog RSYSLOG_SyslogProtocol23Format:
    # "<%PRI%>1 %TIMESTAMP:::date-rfc3339% %HOSTNAME% %APP-NAME% %PROCID% %MSGID% %STRUCTURED-DATA% %msg%\n"
    pytest.param(b"<30>1 2026-11-21T11:00:00.123456+01:00 web1 nginx 812 - - GET / 200",
                 {"_time": "2026-11-21T10:00:00.123456Z", "_msg": "GET / 200",
                  "hostname": "web1", "app_name": "nginx", "proc_id": "812", **header(30),
                  "source_ip": IP},
                 id="rsyslog-protocol23"),
    # syslog-ng syslog() driver (IETF, the default for syslog()): RFC 5424 with seconds
    # and offset, SD "-" (syslog-ng docs, "syslog() destination driver").
    pytest.param(b"<38>1 2026-11-21T12:00:00+00:00 ng1 sshd 77 - - Accepted key",
                 {"_time": "2026-11-21T12:00:00.000000Z", "_msg": "Accepted key",
                  "hostname": "ng1", "app_name": "sshd", "proc_id": "77", **header(38),
                  "source_ip": IP},
                 id="syslog-ng-ietf"),
    # Docker syslog driver, syslog-format=rfc5424 (srslog RFC5424Formatter:
    # "<%d>%d %s %s %s %d %s - %s", stamp time.RFC3339, MSGID = tag).
    pytest.param(b"<30>1 2026-11-21T12:00:00Z 3f2a9c1b7d4e api 4242 api - listening on :80",
                 {"_time": "2026-11-21T12:00:00.000000Z", "_msg": "listening on :80",
                  "hostname": "3f2a9c1b7d4e", "app_name": "api", "proc_id": "4242",
                  "msg_id": "api", **header(30), "source_ip": IP},
                 id="docker-rfc5424"),
    # syslog-format=rfc5424micro: RFC3339Micro stamp "2006-01-02T15:04:05.999999Z07:00".
    pytest.param(b"<30>1 2026-11-21T12:00:00.5+01:00 3f2a9c1b7d4e api 4242 api - ok",
                 {"_time": "2026-11-21T11:00:00.500000Z", "_msg": "ok",
                  "hostname": "3f2a9c1b7d4e", "app_name": "api", "proc_id": "4242",
                  "msg_id": "api", **header(30), "source_ip": IP},
                 id="docker-rfc5424micro"),
    # A PARAM repeated within one element keeps all values, in order.
    pytest.param(b'<13>1 - h a - - [x@1 ip="1" ip="2" ip="3" k="v"] m',
                 {"_time": RECV_TEXT, "_msg": "m", "hostname": "h", "app_name": "a",
                  **header(13), "x@1.ip": ["1", "2", "3"], "x@1.k": "v", "source_ip": IP},
                 id="sd-repeated-param-list"),
    # Escapes: \" \\ \] undone; any other backslash kept as is.
    pytest.param(b'<13>1 - h a - - [x@1 p="a\\\\b \\n \\q"] m',
                 {"_time": RECV_TEXT, "_msg": "m", "hostname": "h", "app_name": "a",
                  **header(13), "x@1.p": "a\\b \\n \\q", "source_ip": IP},
                 id="sd-other-backslashes-kept"),
    # An unescaped ']' inside a quoted value (common in practice) does not end the element.
    pytest.param(b'<13>1 - h a - - [x@1 p="a]b"] m',
                 {"_time": RECV_TEXT, "_msg": "m", "hostname": "h", "app_name": "a",
                  **header(13), "x@1.p": "a]b", "source_ip": IP},
                 id="sd-unescaped-bracket-in-value"),
    # Malformed SD: the header is kept, the unparsable rest stays in _msg (nothing lost).
    pytest.param(b"<13>1 - h a - - [x@1 p=unquoted] m",
                 {"_time": RECV_TEXT, "_msg": "[x@1 p=unquoted] m", "hostname": "h",
                  "app_name": "a", **header(13), "source_ip": IP},
                 id="sd-malformed-kept-in-msg"),
]


RFC3164_CASES = [
    # RFC 3164 section 5.4, example 1.
    pytest.param(b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
                 {"_time": "2026-10-11T22:14:15.000000Z",
                  "_msg": "'su root' failed for lonvick on /dev/pts/8",
                  "hostname": "mymachine", "app_name": "su", **header(34), "source_ip": IP},
                 id="rfc3164-example1"),
    # Example 2: an IP as hostname, no tag.
    pytest.param(b"<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!",
                 {"_time": "2026-02-05T17:32:18.000000Z", "_msg": "Use the BFG!",
                  "hostname": "10.0.0.99", **header(13), "source_ip": IP},
                 id="rfc3164-example2-no-tag"),
    # Example 3: a zone and year after the clock.
    pytest.param(b"<165>Aug 24 05:34:00 CST 1987 mymachine myproc[10]: %% It's time to "
                 b"make the do-nuts.  %%  Ingredients: Mix=OK, Jars=OK Date=7/30/88 Time=19:00",
                 {"_time": "1987-08-24T05:34:00.000000Z",
                  "_msg": "%% It's time to make the do-nuts.  %%  Ingredients: Mix=OK, "
                          "Jars=OK Date=7/30/88 Time=19:00",
                  "hostname": "mymachine", "app_name": "myproc", "proc_id": "10",
                  **header(165), "source_ip": IP},
                 id="rfc3164-example3-zone-year"),
    # Example 4: no valid stamp after the PRI, so (RFC 3164 4.3.2) it is all content.
    pytest.param(b"<0>1990 Oct 22 10:52:01 TZ-6 scapegoat.dmz.example.org 10.1.2.3 "
                 b"sched[0]: That's All Folks!",
                 {"_time": RECV_TEXT,
                  "_msg": "1990 Oct 22 10:52:01 TZ-6 scapegoat.dmz.example.org 10.1.2.3 "
                          "sched[0]: That's All Folks!",
                  **header(0), "source_ip": IP},
                 id="rfc3164-example4-content-only"),
    # util-linux 2.38.1: logger --rfc3164 -t myapp -i -p user.err (UDP).
    pytest.param(b"<11>Nov 21 15:51:58 vm myapp[9513]: hello 3164",
                 {"_time": "2026-11-21T15:51:58.000000Z", "_msg": "hello 3164",
                  "hostname": "vm", "app_name": "myapp", "proc_id": "9513", **header(11),
                  "source_ip": IP},
                 id="logger-rfc3164"),
    # Python logging.handlers.SysLogHandler (facility local0): "<PRI>message\0", no stamp.
    pytest.param(b"<132>disk almost full",
                 {"_time": RECV_TEXT, "_msg": "disk almost full", **header(132),
                  "source_ip": IP},
                 id="python-syslog-handler"),
    # ... with ident = "myapp: ": the ident is the tag.
    pytest.param(b"<131>myapp: x ERROR boom",
                 {"_time": RECV_TEXT, "_msg": "x ERROR boom", "app_name": "myapp",
                  **header(131), "source_ip": IP},
                 id="python-syslog-handler-ident"),
    # rsyslog omfwd default, RSYSLOG_TraditionalForwardFormat:
    # "<%PRI%>%TIMESTAMP% %HOSTNAME% %syslogtag:1:32%%msg:::sp-if-no-1st-sp%%msg%"
    pytest.param(b"<86>Nov  1 08:05:09 web1 sudo:   alice : TTY=pts/0 ; COMMAND=/bin/ls",
                 {"_time": "2026-11-01T08:05:09.000000Z",
                  "_msg": "  alice : TTY=pts/0 ; COMMAND=/bin/ls", "hostname": "web1",
                  "app_name": "sudo", **header(86), "source_ip": IP},
                 id="rsyslog-traditional-forward"),
    # RSYSLOG_ForwardFormat: the same with "%TIMESTAMP:::date-rfc3339%".
    pytest.param(b"<86>2026-11-21T13:00:00.250+01:00 web1 sshd[77]: Accepted publickey",
                 {"_time": "2026-11-21T12:00:00.250000Z", "_msg": "Accepted publickey",
                  "hostname": "web1", "app_name": "sshd", "proc_id": "77", **header(86),
                  "source_ip": IP},
                 id="rsyslog-forward-iso"),
    # RSYSLOG_FileFormat lines (no PRI): "%TIMESTAMP:::date-rfc3339% %HOSTNAME% %syslogtag%%msg%"
    pytest.param(b"2026-11-21T12:00:00.000001+00:00 web1 kernel: [  1.5] usb 1-1: new",
                 {"_time": "2026-11-21T12:00:00.000001Z", "_msg": "[  1.5] usb 1-1: new",
                  "hostname": "web1", "app_name": "kernel", "source_ip": IP},
                 id="rsyslog-file-format-no-pri"),
    # syslog-ng network() legacy BSD: "<PRI>$BSDDATE $HOST $MSGHDR$MSG".
    pytest.param(b"<78>Nov 21 11:59:59 ng1 CRON[123]: (root) CMD (run-parts)",
                 {"_time": "2026-11-21T11:59:59.000000Z", "_msg": "(root) CMD (run-parts)",
                  "hostname": "ng1", "app_name": "CRON", "proc_id": "123", **header(78),
                  "source_ip": IP},
                 id="syslog-ng-bsd"),
    # Docker syslog driver, syslog-format=rfc3164 (srslog RFC3164Formatter:
    # "<%d>%s %s %s[%d]: %s", stamp time.Stamp "Jan _2 15:04:05").
    pytest.param(b"<30>Nov  2 10:00:00 3f2a9c1b7d4e api[4242]: GET /health",
                 {"_time": "2026-11-02T10:00:00.000000Z", "_msg": "GET /health",
                  "hostname": "3f2a9c1b7d4e", "app_name": "api", "proc_id": "4242",
                  **header(30), "source_ip": IP},
                 id="docker-rfc3164"),
    # Docker's default (no syslog-format): srslog DefaultFormatter, RFC 3339 stamp.
    pytest.param(b"<30>2026-11-21T13:00:00+01:00 3f2a9c1b7d4e api[4242]: ready",
                 {"_time": "2026-11-21T12:00:00.000000Z", "_msg": "ready",
                  "hostname": "3f2a9c1b7d4e", "app_name": "api", "proc_id": "4242",
                  **header(30), "source_ip": IP},
                 id="docker-default-format"),
    # Linux_2k.log / OpenSSH_2k.log: classic file lines without PRI.
    pytest.param(b"Jun 14 15:16:01 combo sshd(pam_unix)[19939]: check pass; user unknown",
                 {"_time": "2026-06-14T15:16:01.000000Z", "_msg": "check pass; user unknown",
                  "hostname": "combo", "app_name": "sshd(pam_unix)", "proc_id": "19939",
                  "source_ip": IP},
                 id="no-pri-linux"),
    pytest.param(b"Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user webmaster from 1.2.3.4",
                 {"_time": "2025-12-10T06:55:46.000000Z",
                  "_msg": "Invalid user webmaster from 1.2.3.4", "hostname": "LabSZ",
                  "app_name": "sshd", "proc_id": "24200", "source_ip": IP},
                 id="no-pri-openssh-last-year"),
    # Mac_2k.log: macOS process names hold spaces.
    pytest.param(b"Jul  4 23:22:09 calvisitor-10-105-162-105 Microsoft Word[14463]: Cocoa "
                 b"scripting error for '0x00660011': four character codes",
                 {"_time": "2026-07-04T23:22:09.000000Z",
                  "_msg": "Cocoa scripting error for '0x00660011': four character codes",
                  "hostname": "calvisitor-10-105-162-105", "app_name": "Microsoft Word",
                  "proc_id": "14463", "source_ip": IP},
                 id="macos-tag-with-space"),
    pytest.param(b"Jul  3 17:10:11 mac BezelServices 255.10[94]: ASSERTION FAILED: x",
                 {"_time": "2026-07-03T17:10:11.000000Z", "_msg": "ASSERTION FAILED: x",
                  "hostname": "mac", "app_name": "BezelServices 255.10", "proc_id": "94",
                  "source_ip": IP},
                 id="macos-tag-with-version"),
    pytest.param(b"Jun 14 15:16:01 combo last message repeated 2 times",
                 {"_time": "2026-06-14T15:16:01.000000Z",
                  "_msg": "last message repeated 2 times", "hostname": "combo",
                  "source_ip": IP},
                 id="no-tag"),
    pytest.param(b"<13>Jun  1 01:02:03 sshd[5]: no hostname",
                 {"_time": "2026-06-01T01:02:03.000000Z", "_msg": "no hostname",
                  "app_name": "sshd", "proc_id": "5", **header(13), "source_ip": IP},
                 id="no-hostname-tag-pid"),
    pytest.param(b"<13>Jun 1 01:02:03 host app: single-digit day",
                 {"_time": "2026-06-01T01:02:03.000000Z", "_msg": "single-digit day",
                  "hostname": "host", "app_name": "app", **header(13), "source_ip": IP},
                 id="single-space-day"),
    pytest.param(b"<13>Jun 01 01:02:03.123456 host app: fraction",
                 {"_time": "2026-06-01T01:02:03.123456Z", "_msg": "fraction",
                  "hostname": "host", "app_name": "app", **header(13), "source_ip": IP},
                 id="bsd-fraction"),
    pytest.param(b"<13>Nov 21 11:00:00 - app: nil host",
                 {"_time": "2026-11-21T11:00:00.000000Z", "_msg": "nil host",
                  "app_name": "app", **header(13), "source_ip": IP},
                 id="nil-hostname-absent"),
    # Cisco IOS "service timestamps log datetime msec show-timezone", counter, "*" unsynced.
    pytest.param(b"<189>35: *Mar  1 18:46:11.123 UTC: %SYS-5-CONFIG_I: Configured from "
                 b"console by vty0 (10.0.0.1)",
                 {"_time": "2026-03-01T18:46:11.123000Z",
                  "_msg": "%SYS-5-CONFIG_I: Configured from console by vty0 (10.0.0.1)",
                  "msg_id": "SYS-5-CONFIG_I", **header(189), "source_ip": IP},
                 id="cisco-ios-counter-utc"),
    pytest.param(b"<187>12: router1: Nov 20 10:00:00: %LINK-3-UPDOWN: Interface Gi0/1, "
                 b"changed state to down",
                 {"_time": "2026-11-20T10:00:00.000000Z",
                  "_msg": "%LINK-3-UPDOWN: Interface Gi0/1, changed state to down",
                  "hostname": "router1", "msg_id": "LINK-3-UPDOWN", **header(187),
                  "source_ip": IP},
                 id="cisco-ios-origin-hostname"),
    # Cisco IOS without timestamps service: counter, then the mnemonic.
    pytest.param(b"<189>36: %LINEPROTO-5-UPDOWN: Line protocol on Interface Gi0/1, "
                 b"changed state to up",
                 {"_time": RECV_TEXT,
                  "_msg": "%LINEPROTO-5-UPDOWN: Line protocol on Interface Gi0/1, changed "
                          "state to up",
                  "msg_id": "LINEPROTO-5-UPDOWN", **header(189), "source_ip": IP},
                 id="cisco-ios-no-stamp"),
    # Cisco ASA "logging timestamp" + "logging device-id hostname": note "host : %ASA".
    pytest.param(b"<166>Jan 05 2026 10:00:00 fw01 : %ASA-6-302013: Built outbound TCP "
                 b"connection 1 for outside:1.1.1.1/443",
                 {"_time": "2026-01-05T10:00:00.000000Z",
                  "_msg": "%ASA-6-302013: Built outbound TCP connection 1 for "
                          "outside:1.1.1.1/443",
                  "hostname": "fw01", "msg_id": "ASA-6-302013", **header(166),
                  "source_ip": IP},
                 id="cisco-asa-year-hostname"),
    pytest.param(b"<166>%ASA-4-106023: Deny tcp src outside:1.2.3.4/5",
                 {"_time": RECV_TEXT, "_msg": "%ASA-4-106023: Deny tcp src outside:1.2.3.4/5",
                  "msg_id": "ASA-4-106023", **header(166), "source_ip": IP},
                 id="cisco-asa-no-stamp"),
    # NX-OS: year in the stamp, a subfacility in the mnemonic.
    pytest.param(b"<187>2026 Nov 21 10:00:00 nx1 %ETH_PORT_CHANNEL-5-PORT_UP: up",
                 {"_time": RECV_TEXT,
                  "_msg": "2026 Nov 21 10:00:00 nx1 %ETH_PORT_CHANNEL-5-PORT_UP: up",
                  **header(187), "source_ip": IP},
                 id="nxos-year-first-is-content"),
]


RAW_CASES = [
    pytest.param(b"<192>Nov 21 11:00:00 host app: pri too big",
                 {"_time": RECV_TEXT, "_msg": "<192>Nov 21 11:00:00 host app: pri too big",
                  "parse_error": "true", "source_ip": IP},
                 id="pri-over-191"),
    pytest.param(b"<999>1 - - - - - - x",
                 {"_time": RECV_TEXT, "_msg": "<999>1 - - - - - - x", "parse_error": "true",
                  "source_ip": IP},
                 id="pri-999"),
    pytest.param(b"2015-07-29 17:41:44,747 - INFO  [QuorumPeer] - Notification time out",
                 {"_time": RECV_TEXT,
                  "_msg": "2015-07-29 17:41:44,747 - INFO  [QuorumPeer] - Notification time out",
                  "parse_error": "true", "source_ip": IP},
                 id="zookeeper-not-syslog"),
    pytest.param(b"[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok",
                 {"_time": RECV_TEXT, "_msg": "[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok",
                  "parse_error": "true", "source_ip": IP},
                 id="apache-not-syslog"),
    pytest.param(b"Feb 30 10:00:00 host app: impossible date",
                 {"_time": RECV_TEXT, "_msg": "Feb 30 10:00:00 host app: impossible date",
                  "parse_error": "true", "source_ip": IP},
                 id="no-pri-impossible-date"),
    pytest.param(b"", {"_time": RECV_TEXT, "_msg": "", "parse_error": "true", "source_ip": IP},
                 id="empty"),
    pytest.param(b"<13", {"_time": RECV_TEXT, "_msg": "<13", "parse_error": "true",
                          "source_ip": IP},
                 id="unclosed-pri"),
]


@pytest.mark.parametrize(("line", "expected"), RFC5424_CASES + RFC3164_CASES + RAW_CASES)
def test_wire_sample_parses_to_event(line: bytes, expected: dict) -> None:
    assert parse(line) == expected


@pytest.mark.parametrize(("line", "expected"), RFC5424_CASES + RFC3164_CASES + RAW_CASES)
def test_line_framed_from_tcp_with_trailing_data_parses_the_same(line, expected) -> None:
    """Fed through the framer byte by byte and followed by another message, the line
    still parses to the same event (h11-style: whole, byte by byte, trailing data)."""
    if not line:
        pytest.skip("the framer emits no empty messages")
    framer = StreamFramer(65536)
    out: list[bytes] = []
    for byte in line + b"\n<13>1 - - - - - - next\n":
        out += framer.feed(bytes([byte]))
    assert len(out) == 2
    assert SyslogParser().parse(out[0], RECV, IP) == expected
    assert SyslogParser().parse(out[1], RECV, IP)["_msg"] == "next"


@pytest.mark.parametrize("sd", [
    b'[meta@32473 seq="5" zone="eu-1"]', b'[x@1 a="b"]', b'[x@1 a="b" ]', b'[x@1  a="b"  c=""]',
    b'[x@1 a="b" a="c"]', b'[x@1 a="b]c"]', b'[x@1 a="b\\"c"]', b'[x@1 a="v" "]', b'[x@1 a="v""w]',
    b'[x@1 a="b"][y@2 c="d"]', b'[x@1 a="b"]x', b'[x@1]', b'[x@1 a=b]', b'[x@1\ta="b"]',
])
@pytest.mark.parametrize("rest", [b"", b" msg", b" \xef\xbb\xbfmsg"])
def test_batch_structured_data_shortcut_gives_the_per_line_event(sd: bytes, rest: bytes) -> None:
    # parse_lines reads one plain SD-ELEMENT inside its header regex; parse() does not.
    line = b"<134>1 2026-11-21T10:00:00.123456Z host app 42 - " + sd + rest
    assert SyslogParser().parse_lines([line], RECV, IP) == [SyslogParser().parse(line, RECV, IP)]


def test_raw_lines_are_counted_and_parsed_lines_are_not() -> None:
    parser = SyslogParser()
    events = parser.parse_lines([b"junk", b"<13>1 - - - - - - ok", b"more junk"], RECV, IP)
    assert [e.get("parse_error") for e in events] == ["true", None, "true"]
    assert parser.parse_errors == 2


def test_source_ip_absent_when_unknown() -> None:
    assert "source_ip" not in parse(b"<13>1 - - - - - - x", source_ip=None)
    assert "source_ip" not in parse(b"junk", source_ip=None)


def test_lines_without_pri_have_no_facility_severity_or_level() -> None:
    event = parse(b"Nov 21 11:00:00 host app: x")
    assert not {"facility", "severity", "level"} & event.keys()


def test_every_pri_maps_to_spec_names() -> None:
    for pri in range(192):
        event = parse(f"<{pri}>1 - - - - - - x".encode())
        assert {k: event[k] for k in ("facility", "severity", "level")} == header(pri)


# -- text handling ------------------------------------------------------------------


def test_invalid_utf8_becomes_replacement_character() -> None:
    event = parse(b"<13>1 - h\xff a - - - caf\xc3 \xe9t\xe9 \xed\xa0\x80")
    assert event["hostname"] == "h\ufffd"
    assert event["_msg"] == "caf\ufffd \ufffdt\ufffd \ufffd\ufffd\ufffd"
    assert "parse_error" not in event


def test_nul_and_control_characters_are_kept_as_sent() -> None:
    event = parse(b"<13>Nov 21 11:00:00 host app: a\x00b\x01c\td\x1be")
    assert event["_msg"] == "a\x00b\x01c\td\x1be"


def test_bom_at_line_start_is_removed() -> None:
    assert parse(b"\xef\xbb\xbf<13>1 - h a - - - x")["hostname"] == "h"


def test_bom_in_rfc3164_content_is_kept() -> None:
    # RFC 5424 defines the BOM before MSG; an RFC 3164 line's content is kept as sent.
    assert parse(b"<13>Nov 21 11:00:00 host app: \xef\xbb\xbfx")["_msg"] == "\ufeffx"


def test_multiline_udp_message_is_one_event() -> None:
    event = parse(b"<13>Nov 21 11:00:00 host app: Traceback:\n  File x\nValueError")
    assert event["_msg"] == "Traceback:\n  File x\nValueError"


# -- time ---------------------------------------------------------------------------


@pytest.mark.parametrize(("stamp", "recv", "expected"), [
    pytest.param(b"Dec 31 23:59:59", utc(2027, 1, 1, 0, 0, 5), "2026-12-31T23:59:59",
                 id="dec31-read-jan1-is-last-year"),
    pytest.param(b"Jan  1 00:00:01", utc(2026, 12, 31, 23, 59, 58), "2027-01-01T00:00:01",
                 id="jan1-read-dec31-slightly-early-clock-is-next-year"),
    pytest.param(b"Nov 22 11:59:59", utc(2026, 11, 21, 12), "2026-11-22T11:59:59",
                 id="just-under-a-day-ahead-stays-this-year"),
    pytest.param(b"Nov 22 12:00:01", utc(2026, 11, 21, 12), "2025-11-22T12:00:01",
                 id="over-a-day-ahead-is-last-year"),
    pytest.param(b"Jun 15 00:00:00", utc(2026, 1, 1), "2025-06-15T00:00:00",
                 id="mid-year-read-in-january"),
    pytest.param(b"Feb 29 12:00:00", utc(2026, 3, 1), "2024-02-29T12:00:00",
                 id="feb29-goes-back-to-a-leap-year"),
])
def test_rfc3164_year_inference(stamp: bytes, recv: float, expected: str) -> None:
    event = parse(b"<13>" + stamp + b" host app: x", recv=recv)
    assert event["_time"] == expected + ".000000Z"


@pytest.mark.parametrize(("timezone", "line", "expected"), [
    pytest.param("Asia/Kolkata", b"<13>Nov 21 15:30:00 h a: x", "2026-11-21T10:00:00",
                 id="iana-bsd"),
    pytest.param("+05:30", b"<13>Nov 21 15:30:00 h a: x", "2026-11-21T10:00:00",
                 id="fixed-offset-bsd"),
    pytest.param("-0800", b"<13>Nov 21 02:00:00 h a: x", "2026-11-21T10:00:00",
                 id="fixed-offset-no-colon"),
    pytest.param("Europe/Berlin", b"<13>Jul  1 12:00:00 h a: x", "2026-07-01T10:00:00",
                 id="iana-summer-time"),
    pytest.param("Europe/Berlin", b"<13>Nov 21 12:00:00 h a: x", "2026-11-21T11:00:00",
                 id="iana-winter-time"),
    pytest.param("Asia/Kolkata", b"<13>1 2026-11-21T10:00:00Z h a - - - x",
                 "2026-11-21T10:00:00", id="rfc5424-offset-wins-over-listener-zone"),
    pytest.param("Asia/Kolkata", b"<13>2026-11-21T15:30:00 h a: x", "2026-11-21T10:00:00",
                 id="iso-without-offset-uses-listener-zone"),
    pytest.param("Asia/Kolkata", b"<189>1: *Nov 21 10:00:00.000 UTC: %SYS-5-X: y",
                 "2026-11-21T10:00:00", id="cisco-utc-wins-over-listener-zone"),
])
def test_timezone_applies_to_stamps_without_offset(timezone, line, expected) -> None:
    assert parse(line, timezone=timezone)["_time"] == expected + ".000000Z"


@pytest.mark.parametrize("timezone", ["Mars/Olympus", "+25:00", "", "../../etc/passwd"])
def test_invalid_timezone_is_a_clear_value_error(timezone: str) -> None:
    with pytest.raises(ValueError, match="timezone"):
        SyslogParser(timezone=timezone)


@pytest.mark.parametrize(("stamp", "expected"), [
    pytest.param("2026-11-21T10:00:00Z", "2026-11-21T10:00:00.000000Z", id="no-fraction"),
    pytest.param("2026-11-21T10:00:00.1z", "2026-11-21T10:00:00.100000Z", id="lower-z"),
    pytest.param("2026-11-21T23:30:00-01:00", "2026-11-22T00:30:00.000000Z",
                 id="offset-crosses-midnight"),
    pytest.param("2016-12-31T23:59:60Z", "2016-12-31T23:59:59.000000Z", id="leap-second"),
    pytest.param("2026-02-30T10:00:00Z", None, id="impossible-date"),
    pytest.param("2026-11-21T25:00:00Z", None, id="hour-25"),
    pytest.param("2026-11-21T10:00:00.Z", None, id="empty-fraction"),
    pytest.param("2026-11-21T10:00:00+99:00", None, id="offset-out-of-range"),
])
def test_rfc5424_stamps(stamp: str, expected: str | None) -> None:
    event = parse(f"<13>1 {stamp} h a - - - x".encode())
    if expected is None:  # not a stamp: the line is RFC 3164 content, received now
        assert event["_time"] == RECV_TEXT and event["_msg"] == f"1 {stamp} h a - - - x"
    else:
        assert event["_time"] == expected


def test_format_time() -> None:
    assert format_time(utc(2026, 11, 21, 10) + 0.123456) == "2026-11-21T10:00:00.123456Z"
    assert format_time(0) == "1970-01-01T00:00:00.000000Z"
    assert format_time(utc(2026, 11, 21, 10) + 0.9999996) == "2026-11-21T10:00:01.000000Z"
    assert format_time(float("nan")) == "1970-01-01T00:00:00.000000Z"


# -- bodies, truncation -------------------------------------------------------------


def test_json_body_adds_fields_and_level() -> None:
    event = parse(b'<14>1 - h api - - - {"level":"WARNING","msg":"slow","ms":1200}')
    assert event == {"_time": RECV_TEXT, "_msg": "slow", "hostname": "h", "app_name": "api",
                     **header(14), "level": "warn", "source_ip": IP,
                     "body.level": "WARNING", "ms": 1200}
    assert isinstance(event, BodyEvent) and event.body_keys == {"body.level", "ms"}


def test_logfmt_body_on_3164_line() -> None:
    event = parse(b'<14>Nov 21 11:00:00 h api[1]: lvl=warn msg="retry in 5 seconds"')
    assert event["_msg"] == "retry in 5 seconds"
    assert event["level"] == "warn" and event["lvl"] == "warn"


def test_parse_body_off_keeps_text() -> None:
    event = parse(b'<14>1 - h api - - - {"level":"error"}', parse_body=False)
    assert event["_msg"] == '{"level":"error"}' and event["level"] == "info"
    assert type(event) is dict


def test_body_rule_applies_to_raw_lines() -> None:
    event = parse(b'{"msg":"raw json","level":"debug"}')
    assert event == {"_time": RECV_TEXT, "_msg": "raw json", "parse_error": "true",
                     "source_ip": IP, "level": "debug", "body.level": "debug"}


def test_body_key_colliding_with_structured_data_is_renamed() -> None:
    event = parse(b'<14>1 - h a - - [x@1 k="sd"] {"x@1.k":"body"}')
    assert event["x@1.k"] == "sd" and event["body.x@1.k"] == "body"


def test_framer_truncated_line_is_flagged_not_counted_by_parser() -> None:
    parser = SyslogParser()
    event = parser.parse(Truncated(b"<13>Nov 21 11:00:00 host app: cut her"), RECV, IP)
    assert event["truncated"] == "true" and event["_msg"] == "cut her"
    assert parser.truncated == 0
    assert parser.parse(Truncated(b"junk"), RECV, IP)["truncated"] == "true"


def test_long_message_is_capped_under_the_limit_and_counted() -> None:
    import orjson

    parser = SyslogParser(max_msg_bytes=4096)
    line = b"<13>1 - host app - - - " + "é".encode() * 5000
    event = parser.parse(line, RECV, IP)
    assert event["truncated"] == "true" and parser.truncated == 1
    assert 3800 < len(orjson.dumps(event)) <= 4096
    assert event["_msg"] == "é" * len(event["_msg"])


def test_long_control_characters_are_capped_by_encoded_size() -> None:
    import orjson

    parser = SyslogParser(max_msg_bytes=4096)
    event = parser.parse(b"<13>Nov 21 11:00:00 h a: " + b"\x01" * 3000, RECV, IP)
    assert event["truncated"] == "true" and len(orjson.dumps(event)) <= 4096


@pytest.mark.parametrize("text", [
    pytest.param("\x01" * 60000, id="control-characters-6-bytes-each"),
    pytest.param('"\\' * 80000, id="quotes-and-backslashes-2-bytes-each"),
    pytest.param("ok " * 20000 + "\x1f" * 60000, id="text-then-control-characters"),
    pytest.param("\U0001F600" * 70000, id="4-byte-characters"),
])
def test_the_cap_keeps_as_much_text_as_fits_measured_in_encoded_bytes(text) -> None:
    import orjson

    parser = SyslogParser()  # the default cap: 256 KiB - 4 KiB of encoded JSON
    event = parser.parse(b"<13>1 - host app - - - " + text.encode(), RECV, IP)
    size = len(orjson.dumps(event))
    assert event["truncated"] == "true" and size <= 256 * 1024 - 4096
    assert event["_msg"] and text.startswith(event["_msg"])
    one_more = dict(event, _msg=text[: len(event["_msg"]) + 1])
    assert len(orjson.dumps(one_more)) > 256 * 1024 - 4096  # nothing more would have fit


def test_the_cap_never_empties_the_message_for_other_fields() -> None:
    import orjson

    parser = SyslogParser(max_msg_bytes=4096)
    event = parser.parse(b'<13>1 - h a - - [x@1 big="' + b"\x01" * 3000 + b'"] ' + b"\x02" * 3000, RECV, IP)
    assert event["_msg"] and set(event["_msg"]) == {"\x02"} and "x@1.big" not in event
    assert len(orjson.dumps(event)) <= 4096


def test_long_json_body_too_big_with_fields_keeps_capped_text() -> None:
    import orjson

    parser = SyslogParser(max_msg_bytes=4096)
    body = orjson.dumps({"msg": "m", "a": "x" * 3000, "b": "y" * 3000})
    event = parser.parse(b"<13>1 - h a - - - " + body, RECV, IP)
    assert "a" not in event and event["_msg"].startswith('{"msg":"m","a":"xxx')
    assert len(orjson.dumps(event)) <= 4096


def test_long_message_under_the_limit_is_untouched() -> None:
    parser = SyslogParser(max_msg_bytes=8192)
    event = parser.parse(b"<13>1 - h a - - - " + b"x" * 7000, RECV, IP)
    assert "truncated" not in event and len(event["_msg"]) == 7000


def test_huge_structured_data_is_dropped_to_fit() -> None:
    import orjson

    parser = SyslogParser(max_msg_bytes=4096)
    event = parser.parse(b'<13>1 - h a - - [x@1 big="' + b"v" * 6000 + b'"] m', RECV, IP)
    assert "x@1.big" not in event and len(orjson.dumps(event)) <= 4096
    assert event["hostname"] == "h"


def test_receive_time_text_matches_format_time_across_calls() -> None:
    parser = SyslogParser()
    base = utc(2026, 11, 21, 23, 59, 59)
    for offset in (0.0, 0.1, 0.4999995, 0.9999996, 1.0, 1.000001, 0.5, -3600.25, 86400.75):
        event = parser.parse(b"junk", base + offset, None)
        assert event["_time"] == format_time(base + offset), offset


@pytest.mark.parametrize("line", [
    b"<13>Nov 21 10:00:00 web-1 nginx[12]: GET / 200",
    b'<134>1 2026-11-21T10:00:00.123456Z h app 1 - [x@1 a="b"] {"msg": "hi", "level": "warn"}',
    b"<13>1 - - - - - - level=info msg=x",
    b"no header at all \xff",
    b"<999>too big",
    b"<13>Nov 21 10:00:00 h a: " + b"z" * 300_000,  # long: the size cap path
])
def test_parse_lines_takes_a_decoded_line_as_the_same_message(line):
    parser = SyslogParser()
    from_bytes = parser.parse_lines([line], 1_790_000_000.0, "10.0.0.1")
    from_text = parser.parse_lines([line.decode("utf-8", "replace")], 1_790_000_000.0, "10.0.0.1")
    assert [list(e.items()) for e in from_text] == [list(e.items()) for e in from_bytes]
