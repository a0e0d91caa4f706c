# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_firmcast_global_optspecs
    string join \n h/help V/version
end

function __fish_firmcast_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_firmcast_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_firmcast_using_subcommand
    set -l cmd (__fish_firmcast_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c firmcast -n "__fish_firmcast_needs_command" -s h -l help -d 'Print help'
complete -c firmcast -n "__fish_firmcast_needs_command" -s V -l version -d 'Print version'
complete -c firmcast -n "__fish_firmcast_needs_command" -f -a "keygen" -d 'Generate an Ed25519 signing key pair'
complete -c firmcast -n "__fish_firmcast_needs_command" -f -a "manifest" -d 'Sign an image into a manifest, or show (and verify) a manifest'
complete -c firmcast -n "__fish_firmcast_needs_command" -f -a "send" -d 'Send an image to a multicast group as a paced carousel'
complete -c firmcast -n "__fish_firmcast_needs_command" -f -a "repair" -d 'Serve NACKs: resend missing chunks to the repair group or one device'
complete -c firmcast -n "__fish_firmcast_needs_command" -f -a "status" -d 'Listen for device Status reports and print the fleet table'
complete -c firmcast -n "__fish_firmcast_needs_command" -f -a "fleet" -d 'Answer questions from the fleet record (--db): versions, failures, silence'
complete -c firmcast -n "__fish_firmcast_needs_command" -f -a "demo" -d 'Run a real multicast update of several agents on this machine (loopback)'
complete -c firmcast -n "__fish_firmcast_needs_command" -f -a "relay" -d 'Serve one site: fetch a signed image over HTTP(S), verify it, send it'
complete -c firmcast -n "__fish_firmcast_needs_command" -f -a "agent-config" -d 'Write an agent config file from KEY=VALUE pairs, each checked against the agent\'s schema'
complete -c firmcast -n "__fish_firmcast_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c firmcast -n "__fish_firmcast_using_subcommand keygen" -l out -d 'Directory to write firmcast.key and firmcast.pub into (created if missing)' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand keygen" -l force -d 'Overwrite an existing key pair'
complete -c firmcast -n "__fish_firmcast_using_subcommand keygen" -l device -d 'Make a device key pair instead (DIR/device.key for the agent\'s `device_key`, DIR/device.pub for the operator\'s --roster)'
complete -c firmcast -n "__fish_firmcast_using_subcommand keygen" -s h -l help -d 'Print help'
complete -c firmcast -n "__fish_firmcast_using_subcommand manifest" -l show -d 'Show the fields of an existing manifest instead of signing one' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand manifest" -l public-key -d 'With --show: verify the signature with this public key file' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand manifest" -l image -d 'The firmware image to sign' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand manifest" -l board -d 'Board id the image is for, e.g. acme,rt1' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand manifest" -l version -d 'Image version, e.g. 2.1.0 (devices refuse versions not newer than theirs)' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand manifest" -l key -d 'Secret key file from `firmcast keygen`' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand manifest" -l out -d 'Where to write the signed manifest' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand manifest" -l min-version -d 'Signed anti-rollback floor: devices that activate this image refuse images older than V from then on (e.g. 2.3.0)' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand manifest" -l format -d 'Manifest format: 2 (chunk authentication, --min-version) or 1 (for agents that predate format 2)' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand manifest" -l block-size -d 'Block size (verification and flashing unit)' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand manifest" -l chunk-size -d 'Chunk size (payload bytes per datagram)' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand manifest" -l json -d 'With --show: print a JSON object on stdout'
complete -c firmcast -n "__fish_firmcast_using_subcommand manifest" -s h -l help -d 'Print help'
complete -c firmcast -n "__fish_firmcast_using_subcommand send" -l image -d 'The firmware image' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand send" -l manifest -d 'Its signed manifest (checked against the image block by block)' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand send" -l public-key -d 'Also verify the manifest\'s signature with this public key file' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand send" -l group -d 'Multicast group and port to send to' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand send" -l interface -d 'Local address of the interface to send from: IPv4, or IPv6 for an IPv6 group (the interface holding it sends)' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand send" -l rate -d 'Carousel rate in bits per second with a unit: 50M, 800K, 1G (a bare number is refused). The carousel goes slower when the devices\' flash cannot keep up (R-PACE-2), never faster' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand send" -l ttl -d 'Multicast TTL, the IPv6 hop limit (1 = this subnet only; one more per multicast router between here and the devices: --ttl 8)' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand send" -l until-done -d 'Stop once N devices succeeded with this image (`all`: every device of --devices), or once every awaited device is in a final state. While the N devices read back what they received (and no other needs data), the carousel holds: an Announce every 100 ms, no data' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand send" -l devices -d 'The devices this rollout expects: a file with one device id (16 hex digits) or address (IP or IP:PORT) per line. The table shows who never reported; --until-done waits for these only' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand send" -l abort-if-failed -d 'Stop the carousel (exit 1) once N devices failed verification or activation (failed: verify-failed, flash-error, activation-failed)' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand send" -l duration -d 'Stop after this many seconds (decimals allowed)' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand send" -l passes -d 'Stop after N complete carousel passes' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand send" -l announce-every -d 'Datagrams between two Announces' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand send" -l manifest-repeats -d 'Extra copies of the manifest per pass, spread among the data' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand send" -l manifest-lead -d 'Copies of the manifest at the start of each pass, each after an Announce' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand send" -l repair-listen -d 'Also serve repairs from this process, receiving NACKs and Status on this address (instead of an ephemeral port); repairs share --rate' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand send" -l repair-group -d 'Multicast group and port for repairs several devices need: with --repair-listen this process sends them there; without it, it hears a separate repair server\'s there and yields to them (R-REP-11)' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand send" -l repair-source -d 'Without --repair-listen and with a source-specific --repair-group (232.0.0.0/8, ff3x::/32): the separate repair server\'s address, the only source heard on it, e.g. --repair-source 10.0.0.2' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand send" -l repair -d 'With --repair-listen: how to answer a crowd of NACKs (as `firmcast repair --repair`; default parity)' -r -f -a "retransmit\t'Resend each missing chunk once'
parity\t'Send parity symbols (Reed-Solomon over each block): the default. One symbol repairs a different lost chunk at every device, so a lossy crowd needs fewer repairs than by retransmission (bench/README.md)'"
complete -c firmcast -n "__fish_firmcast_using_subcommand send" -l roster -d 'Roster of device keys (lines `DEVICE_ID PUBLIC_KEY`): only Status reports signed by a roster device count, and are shown as authenticated' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand send" -l db -d 'Keep every Status report in this SQLite fleet record (created if missing; WAL). A report is acknowledged once committed (within ~150 ms) and then survives the tool being killed. Read it with `firmcast fleet --db FILE`' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand send" -l http -d 'Serve a live fleet page: PORT (on 127.0.0.1) or ADDR:PORT (any other address only when given, e.g. 0.0.0.0:8080; it has no authentication)' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand send" -l json -d 'Print a JSON summary object on stdout'
complete -c firmcast -n "__fish_firmcast_using_subcommand send" -s v -l verbose -d 'Log every device state change and more'
complete -c firmcast -n "__fish_firmcast_using_subcommand send" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c firmcast -n "__fish_firmcast_using_subcommand repair" -l image -d 'The firmware image' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand repair" -l manifest -d 'Its signed manifest (checked against the image block by block)' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand repair" -l public-key -d 'Also verify the manifest\'s signature with this public key file' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand repair" -l listen -d 'Address and port to receive NACKs and Status on' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand repair" -l interface -d 'Local address of the interface to send group repairs from (IPv4, or IPv6 for IPv6 groups)' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand repair" -l repair-group -d 'Multicast group and port for repairs several devices need' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand repair" -l devices -d 'The devices expected: a file with one device id (16 hex digits) or address (IP or IP:PORT) per line; the table shows who never reported' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand repair" -l group -d 'The carousel\'s multicast group and port (as given to `firmcast send --group`): the repair server hears its Announce and paces repairs at the carousel\'s rate, at most half of it while the carousel sends, so the two together keep to one link budget (R-REP-12)' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand repair" -l source -d 'With a source-specific --group (232.0.0.0/8, ff3x::/32): the carousel\'s sender address, the only source heard on it, e.g. --source 10.0.0.1' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand repair" -l rate -d 'Cap on repair traffic in bits per second. Repairs follow the carousel\'s announced rate, never above this cap. Without it the cap is 50M, or the rate measured on the link while the carousel sends if that is higher (a forged Announce cannot raise it). A unit is required: 50M, 800K, 1G' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand repair" -l ttl -d 'Multicast TTL (IPv6 hop limit) for group repairs (1 = this subnet only; one more per multicast router: --ttl 8)' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand repair" -l repair -d 'How to answer a crowd of NACKs: send fresh parity symbols per block (each repairs a different loss at each device), or resend the missing chunks. A lone straggler gets source chunks unicast either way' -r -f -a "retransmit\t'Resend each missing chunk once'
parity\t'Send parity symbols (Reed-Solomon over each block): the default. One symbol repairs a different lost chunk at every device, so a lossy crowd needs fewer repairs than by retransmission (bench/README.md)'"
complete -c firmcast -n "__fish_firmcast_using_subcommand repair" -l duration -d 'Stop after this many seconds (decimals allowed)' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand repair" -l roster -d 'Roster of device keys (lines `DEVICE_ID PUBLIC_KEY`): only Status reports signed by a roster device count, and are shown as authenticated' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand repair" -l db -d 'Keep every Status report in this SQLite fleet record (created if missing; WAL). A report is acknowledged once committed (within ~150 ms) and then survives the tool being killed. Read it with `firmcast fleet --db FILE`' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand repair" -l http -d 'Serve a live fleet page: PORT (on 127.0.0.1) or ADDR:PORT (any other address only when given, e.g. 0.0.0.0:8080; it has no authentication)' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand repair" -l json -d 'Print a JSON summary object on stdout'
complete -c firmcast -n "__fish_firmcast_using_subcommand repair" -s v -l verbose -d 'Log every NACK'
complete -c firmcast -n "__fish_firmcast_using_subcommand repair" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c firmcast -n "__fish_firmcast_using_subcommand status" -l listen -d 'Address and port to receive Status reports on' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand status" -l devices -d 'The devices expected: a file with one device id (16 hex digits) or address (IP or IP:PORT) per line; see the exit status above' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand status" -l duration -d 'Stop after this many seconds (decimals allowed)' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand status" -l roster -d 'Roster of device keys (lines `DEVICE_ID PUBLIC_KEY`): only Status reports signed by a roster device count, and are shown as authenticated' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand status" -l db -d 'Keep every Status report in this SQLite fleet record (created if missing; WAL). A report is acknowledged once committed (within ~150 ms) and then survives the tool being killed. Read it with `firmcast fleet --db FILE`' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand status" -l http -d 'Serve a live fleet page: PORT (on 127.0.0.1) or ADDR:PORT (any other address only when given, e.g. 0.0.0.0:8080; it has no authentication)' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand status" -l json -d 'Print a JSON object on stdout'
complete -c firmcast -n "__fish_firmcast_using_subcommand status" -s h -l help -d 'Print help'
complete -c firmcast -n "__fish_firmcast_using_subcommand fleet" -l db -d 'The fleet record to read' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand fleet" -l devices -d 'The devices expected (ids or addresses, one a line): list those that never reported' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand fleet" -l rollout -d 'Only reports about this rollout (image id, 16 hex digits)' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand fleet" -l history -d 'Instead: the history of one device (each change of state, reason, version, rollout or address, with when and how many reports)' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand fleet" -l csv -d 'Print CSV (one row per device) instead of the table'
complete -c firmcast -n "__fish_firmcast_using_subcommand fleet" -l json -d 'Print one JSON object (rollouts, devices, never_reported) instead of the table'
complete -c firmcast -n "__fish_firmcast_using_subcommand fleet" -s h -l help -d 'Print help'
complete -c firmcast -n "__fish_firmcast_using_subcommand demo" -l devices -d 'Number of devices (agents) to run' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand demo" -l size -d 'Image size in MiB' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand demo" -l loss -d 'Receive loss at each device, in permille (the agent\'s rx-loss test option)' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand demo" -l rate -d 'Carousel rate (bits/s; K/M/G suffixes)' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand demo" -l dir -d 'Work directory (default: a fresh temp dir, removed on success)' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand demo" -l group -d 'Data multicast group [default: 239.255.77.1:7854; with --ipv6 [ff15::77]:7854]' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand demo" -l repair-group -d 'Repair multicast group [default: 239.255.77.2:7855; with --ipv6 [ff15::78]:7855]' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand demo" -l repair-listen -d 'Repair server\'s listen address [default: 127.0.0.1:7855; with --ipv6 [fd77::1]:7855]' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand demo" -l keep -d 'Keep the work directory (flash files, logs) afterwards'
complete -c firmcast -n "__fish_firmcast_using_subcommand demo" -l ipv6 -d 'Run over IPv6, in a user + network namespace of the demo\'s own (see below)'
complete -c firmcast -n "__fish_firmcast_using_subcommand demo" -l json -d 'Print a JSON summary on stdout'
complete -c firmcast -n "__fish_firmcast_using_subcommand demo" -s h -l help -d 'Print help'
complete -c firmcast -n "__fish_firmcast_using_subcommand relay" -l origin -d 'URL of the image (http:// or https://); fetched with Range requests' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand relay" -l manifest-url -d 'URL of its signed manifest' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand relay" -l public-key -d 'The public key the devices trust: the manifest must verify with it' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand relay" -l ca-file -d 'Trust only this CA (PEM) for https:// (a private CA); default: the bundled web PKI roots' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand relay" -l cache -d 'Download into this file (FILE.manifest beside it) and keep it: a relay restarted with the same file and manifest resumes the download' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand relay" -l forward-status -d 'Forward the devices\' Status frames to a central `firmcast status`' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand relay" -l group -d 'Multicast group and port to send to' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand relay" -l interface -d 'Local address of the site\'s interface to send from: IPv4, or IPv6 for an IPv6 group' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand relay" -l rate -d 'Carousel rate in bits per second with a unit: 50M, 800K, 1G' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand relay" -l ttl -d 'Multicast TTL (1 = this subnet only)' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand relay" -l repair-listen -d 'Serve repairs too, receiving NACKs and Status on this address' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand relay" -l repair-group -d 'Multicast group and port for repairs (as `firmcast send`)' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand relay" -l repair-source -d 'Without --repair-listen and with a source-specific --repair-group: the site\'s repair server\'s address (as `firmcast send`)' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand relay" -l repair -d 'With --repair-listen: parity (default) or retransmit' -r -f -a "retransmit\t'Resend each missing chunk once'
parity\t'Send parity symbols (Reed-Solomon over each block): the default. One symbol repairs a different lost chunk at every device, so a lossy crowd needs fewer repairs than by retransmission (bench/README.md)'"
complete -c firmcast -n "__fish_firmcast_using_subcommand relay" -l until-done -d 'Stop once N devices of the site succeeded (`all`: every device of --devices)' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand relay" -l devices -d 'The site\'s devices (as `firmcast send --devices`)' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand relay" -l duration -d 'Stop after this many seconds (decimals allowed)' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand relay" -l passes -d 'Stop after N complete carousel passes' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand relay" -l roster -d 'Roster of device keys (as `firmcast send --roster`)' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand relay" -l db -d 'Keep every Status report in this SQLite fleet record (created if missing; WAL). A report is acknowledged once committed (within ~150 ms) and then survives the tool being killed. Read it with `firmcast fleet --db FILE`' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand relay" -l http -d 'Serve a live fleet page: PORT (on 127.0.0.1) or ADDR:PORT (any other address only when given, e.g. 0.0.0.0:8080; it has no authentication)' -r
complete -c firmcast -n "__fish_firmcast_using_subcommand relay" -l json -d 'Print a JSON summary object on stdout'
complete -c firmcast -n "__fish_firmcast_using_subcommand relay" -s v -l verbose -d 'Log every device state change and more'
complete -c firmcast -n "__fish_firmcast_using_subcommand relay" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c firmcast -n "__fish_firmcast_using_subcommand agent-config" -l out -d 'Write to this file instead of standard output' -r -F
complete -c firmcast -n "__fish_firmcast_using_subcommand agent-config" -s h -l help -d 'Print help'
complete -c firmcast -n "__fish_firmcast_using_subcommand help; and not __fish_seen_subcommand_from keygen manifest send repair status fleet demo relay agent-config help" -f -a "keygen" -d 'Generate an Ed25519 signing key pair'
complete -c firmcast -n "__fish_firmcast_using_subcommand help; and not __fish_seen_subcommand_from keygen manifest send repair status fleet demo relay agent-config help" -f -a "manifest" -d 'Sign an image into a manifest, or show (and verify) a manifest'
complete -c firmcast -n "__fish_firmcast_using_subcommand help; and not __fish_seen_subcommand_from keygen manifest send repair status fleet demo relay agent-config help" -f -a "send" -d 'Send an image to a multicast group as a paced carousel'
complete -c firmcast -n "__fish_firmcast_using_subcommand help; and not __fish_seen_subcommand_from keygen manifest send repair status fleet demo relay agent-config help" -f -a "repair" -d 'Serve NACKs: resend missing chunks to the repair group or one device'
complete -c firmcast -n "__fish_firmcast_using_subcommand help; and not __fish_seen_subcommand_from keygen manifest send repair status fleet demo relay agent-config help" -f -a "status" -d 'Listen for device Status reports and print the fleet table'
complete -c firmcast -n "__fish_firmcast_using_subcommand help; and not __fish_seen_subcommand_from keygen manifest send repair status fleet demo relay agent-config help" -f -a "fleet" -d 'Answer questions from the fleet record (--db): versions, failures, silence'
complete -c firmcast -n "__fish_firmcast_using_subcommand help; and not __fish_seen_subcommand_from keygen manifest send repair status fleet demo relay agent-config help" -f -a "demo" -d 'Run a real multicast update of several agents on this machine (loopback)'
complete -c firmcast -n "__fish_firmcast_using_subcommand help; and not __fish_seen_subcommand_from keygen manifest send repair status fleet demo relay agent-config help" -f -a "relay" -d 'Serve one site: fetch a signed image over HTTP(S), verify it, send it'
complete -c firmcast -n "__fish_firmcast_using_subcommand help; and not __fish_seen_subcommand_from keygen manifest send repair status fleet demo relay agent-config help" -f -a "agent-config" -d 'Write an agent config file from KEY=VALUE pairs, each checked against the agent\'s schema'
complete -c firmcast -n "__fish_firmcast_using_subcommand help; and not __fish_seen_subcommand_from keygen manifest send repair status fleet demo relay agent-config help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
