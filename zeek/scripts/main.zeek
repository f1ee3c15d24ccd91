##! Raise Zeek notices from zeekml verdicts.
##!
##! zeekml scores Zeek conn.log flows with small neural detectors and writes its
##! verdicts as a Zeek ASCII log, ``zeekml.log`` (``#path zeekml``). This script
##! follows that file as it grows, with the raw Input reader in STREAM mode (which,
##! unlike the ASCII reader, reopens the file when it is rotated), parses each TSV
##! line by the names in its ``#fields`` header, and raises one NOTICE per verdict
##! row whose ``notice`` field is ``T``, so Zeek's notice policy (suppression,
##! e-mail, drop actions) applies to zeekml's verdicts.

@load base/frameworks/input
@load base/frameworks/notice

module ZeekML;

export {
	redef enum Notice::Type += {
		## A flow the AMF-LSTM classified as a distributed denial of service.
		Ddos,
		## A flow the AMF-LSTM classified as denial of service.
		Dos,
		## A flow the AMF-LSTM classified as port scanning.
		Portscan,
		## A flow the AMF-LSTM classified as bot or command-and-control traffic.
		C2,
		## A flow the AMF-LSTM classified as brute forcing.
		Bruteforce,
		## A flow the AMF-LSTM classified as a web attack.
		Webattack,
		## A flow the AMF-LSTM classified as infiltration.
		Infiltration,
		## A flow the flow language model found anomalous.
		Anomaly,
		## A notice of a class this script does not know (e.g. a plugin model).
		Other,
	};

	## Path of the zeekml verdict log to follow.
	const log_path = "zeekml.log" &redef;

	## T: follow the file as it grows and across rotation (STREAM mode).
	## F: read it once (MANUAL mode), e.g. with ``zeek -r trace.pcap``.
	const follow = T &redef;

	## T: when following, start at the end of the file, so a restarted Zeek
	## does not raise notices again for verdicts it already raised.
	const start_at_end = T &redef;

	## T: call terminate() once a non-following read reached the end of the file
	## (for offline runs with ``exit_only_after_terminate=T``).
	const exit_at_end = F &redef;

	## How long Zeek suppresses repeats of one (source host, class, model).
	const suppress_for = 1hr &redef;

	## zeekml class name, lower-cased with everything but letters and digits
	## removed, to the notice type raised for it.
	const class_notes: table[string] of Notice::Type = {
		["ddos"] = Ddos,
		["dos"] = Dos,
		["portscan"] = Portscan,
		["bot"] = C2,
		["c2"] = C2,
		["cc"] = C2,
		["botc2"] = C2,
		["bruteforce"] = Bruteforce,
		["webattack"] = Webattack,
		["infiltration"] = Infiltration,
		["anomaly"] = Anomaly,
	} &redef;

	## One parsed verdict row (the fields of zeekml.log that notices use).
	type Verdict: record {
		ts: time;
		uid: string;
		id: conn_id;
		model: string;
		verdict: string;
		score: string;
		threshold: string;
		n: count;
	};

	## Raised for every verdict row that becomes a notice, before NOTICE is
	## called; handle it to act on zeekml verdicts in your own scripts.
	global verdict_seen: event(v: Verdict);

	## The notice type a zeekml class name maps to.
	global note_for: function(cls: string): Notice::Type;
}

type Line: record {
	s: string;
};

# Column of each field name. Preset to zeekml.log's order, so a follower that
# starts at the end of a file (after its #fields line) still parses; every
# #fields line read replaces it.
global field_index: table[string] of count = {
	["ts"] = 0,
	["uid"] = 1,
	["id.orig_h"] = 2,
	["id.orig_p"] = 3,
	["id.resp_h"] = 4,
	["id.resp_p"] = 5,
	["proto"] = 6,
	["model"] = 7,
	["verdict"] = 8,
	["score"] = 9,
	["threshold"] = 10,
	["notice"] = 11,
	["alt"] = 12,
	["alt_score"] = 13,
	["n"] = 14,
	["context"] = 15,
	["candidate"] = 16,
	["decision"] = 17,
};

global zeekml_line: event(description: Input::EventDescription,
    tpe: Input::Event, s: string);

function note_for(cls: string): Notice::Type
	{
	local key = gsub(to_lower(cls), /[^a-z0-9]/, "");
	if ( key in class_notes )
		return class_notes[key];
	return Other;
	}

function column(f: string_vec, name: string): string
	{
	if ( name !in field_index )
		return "-";
	local i = field_index[name];
	if ( i >= |f| )
		return "-";
	return f[i];
	}

function port_of(text: string, proto: transport_proto): port
	{
	if ( /^[0-9]+$/ !in text )
		return count_to_port(0, proto);
	local n = to_count(text);
	if ( n > 65535 )
		n = 0;
	return count_to_port(n, proto);
	}

function parse_header(s: string)
	{
	if ( /^#fields\t/ !in s )
		return;
	local names = split_string(s, /\t/);
	local fresh: table[string] of count = table();
	for ( i in names )
		{
		if ( i > 0 )
			fresh[names[i]] = i - 1;
		}
	field_index = fresh;
	}

function parse_verdict(f: string_vec): Verdict
	{
	local proto = to_lower(column(f, "proto"));
	local tp = unknown_transport;
	if ( proto == "tcp" )
		tp = tcp;
	else if ( proto == "udp" )
		tp = udp;
	else if ( proto == "icmp" )
		tp = icmp;

	local ts_text = column(f, "ts");
	local ts = network_time();
	if ( /^[0-9]+(\.[0-9]+)?$/ in ts_text )
		ts = double_to_time(to_double(ts_text));

	local n_text = column(f, "n");
	local n = 1;
	if ( /^[0-9]+$/ in n_text )
		n = to_count(n_text);

	local orig_p = port_of(column(f, "id.orig_p"), tp);
	local resp_p = port_of(column(f, "id.resp_p"), tp);
	local orig_h = to_addr(column(f, "id.orig_h"));
	local resp_h = to_addr(column(f, "id.resp_h"));
	local id = conn_id($orig_h=orig_h, $orig_p=orig_p, $resp_h=resp_h,
	    $resp_p=resp_p);

	local uid = column(f, "uid");
	local model = column(f, "model");
	local verdict = column(f, "verdict");
	local score = column(f, "score");
	local threshold = column(f, "threshold");
	return Verdict($ts=ts, $uid=uid, $id=id, $model=model, $verdict=verdict,
	    $score=score, $threshold=threshold, $n=n);
	}

function raise_notice(v: Verdict)
	{
	local msg = fmt("zeekml %s: %s flow %s:%s -> %s:%s (score %s, threshold %s)",
	    v$model, v$verdict, v$id$orig_h, v$id$orig_p, v$id$resp_h,
	    v$id$resp_p, v$score, v$threshold);
	NOTICE([$note=note_for(v$verdict), $msg=msg, $sub=v$model, $ts=v$ts, $id=v$id,
	    $uid=v$uid, $src=v$id$orig_h, $dst=v$id$resp_h, $p=v$id$resp_p,
	    $n=v$n, $identifier=cat(v$id$orig_h, "/", v$verdict, "/", v$model),
	    $suppress_for=suppress_for]);
	}

event zeekml_line(description: Input::EventDescription, tpe: Input::Event,
    s: string)
	{
	if ( |s| == 0 )
		return;
	if ( /^#/ in s )
		{
		parse_header(s);
		return;
		}
	local f = split_string(s, /\t/);
	if ( column(f, "notice") != "T" )
		return;
	if ( ! is_valid_ip(column(f, "id.orig_h"))
	    || ! is_valid_ip(column(f, "id.resp_h")) )
		{
		Reporter::warning(fmt("zeekml: skipping a line of %s without valid addresses",
		    log_path));
		return;
		}
	local v = parse_verdict(f);
	event ZeekML::verdict_seen(v);
	raise_notice(v);
	}

event Input::end_of_data(name: string, source: string)
	{
	if ( name == "zeekml" && exit_at_end && ! follow )
		terminate();
	}

event zeek_init()
	{
	local config: table[string] of string = table();
	if ( follow && start_at_end )
		config["offset"] = "-1";
	Input::add_event([$source=log_path, $name="zeekml", $reader=Input::READER_RAW,
	    $mode=follow ? Input::STREAM : Input::MANUAL, $fields=Line,
	    $ev=zeekml_line, $want_record=F, $config=config]);
	}
