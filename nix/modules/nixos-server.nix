# NixOS: services.cairn-server, the Cairn server (API, binary cache, agent hub and dashboard on
# one port) as a hardened systemd service. Every option is described in docs/nixos.md.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib)
    literalExpression
    mkEnableOption
    mkIf
    mkOption
    types
    ;
  cfg = config.services.cairn-server;

  localDatabaseUrl = "postgresql:///${cfg.user}?host=/run/postgresql&user=${cfg.user}";
  databaseUrl = if cfg.database.createLocally then localDatabaseUrl else cfg.database.url;
  stateUnderVarLib = lib.hasPrefix "/var/lib/" cfg.dataDir;
  host = if lib.hasInfix ":" cfg.host then "[${cfg.host}]" else cfg.host;
  outsideStore = file: lib.hasPrefix "/" file && !lib.hasPrefix builtins.storeDir file;

  serverArgs =
    [
      "--listen"
      "${host}:${toString cfg.port}"
      "--data-dir"
      cfg.dataDir
      "--log-level"
      cfg.logLevel
    ]
    ++ lib.optionals (cfg.publicUrl != null) [
      "--public-url"
      cfg.publicUrl
    ]
    ++ lib.optionals (cfg.blobStore != null) [
      "--blob-store"
      cfg.blobStore
    ]
    ++ lib.optionals (cfg.trustedProxies != [ ]) [
      "--trusted-proxy"
      (lib.concatStringsSep "," cfg.trustedProxies)
    ]
    ++ lib.optionals (cfg.metrics.listen != null) [
      "--metrics-listen"
      cfg.metrics.listen
    ]
    ++ lib.optional cfg.metrics.perAgent "--metrics-per-agent";

  # The backup job talks to the server on this machine: a wildcard listen address is reached on
  # the loopback address.
  localHost =
    if cfg.host == "0.0.0.0" then
      "127.0.0.1"
    else if cfg.host == "::" then
      "[::1]"
    else
      host;
  backupScript = pkgs.writeShellScript "cairn-server-backup" ''
    set -eu
    CAIRN_TOKEN="$(< "$CREDENTIALS_DIRECTORY/admin-token")"
    export CAIRN_TOKEN
    export CAIRN_SERVER=${lib.escapeShellArgs [ "http://${localHost}:${toString cfg.port}" ]}
    dir=${lib.escapeShellArgs [ cfg.backup.directory ]}
    ${cfg.package}/bin/cairn server backup --to "$dir/cairn-$(date -u +%Y%m%dT%H%M%SZ).backup"${lib.optionalString cfg.backup.includeStore " --include-store"}
    # The newest ${toString cfg.backup.keep} are kept.
    ls -1t "$dir"/cairn-*.backup | tail -n +${toString (cfg.backup.keep + 1)} | while read -r old; do rm -f -- "$old"; done
  '';

  # A database URL with a password is read where systemd put it (LoadCredential) when the
  # service starts: never in the Nix store, the unit file or the command line.
  start = pkgs.writeShellScript "cairn-server-start" ''
    set -eu
    ${lib.optionalString (cfg.database.urlFile != null) ''
      CAIRN_DATABASE_URL="$(< "$CREDENTIALS_DIRECTORY/database-url")"
      export CAIRN_DATABASE_URL
    ''}exec ${cfg.package}/bin/cairn server ${lib.escapeShellArgs serverArgs}
  '';
in
{
  options.services.cairn-server = {
    enable = mkEnableOption "the Cairn server: API, binary cache, agent hub and dashboard on one port";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ../package.nix { };
      defaultText = literalExpression "the cairn package of this repository (nix/package.nix)";
      description = "The Cairn package whose `cairn server` runs.";
    };

    host = mkOption {
      type = types.str;
      default = "127.0.0.1";
      example = "0.0.0.0";
      description = "Address to listen on. Put a TLS-terminating proxy in front for remote agents.";
    };

    port = mkOption {
      type = types.port;
      default = 8080;
      description = "Port to listen on.";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Whether to open `port` in the firewall.";
    };

    publicUrl = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "https://cairn.example.com";
      description = ''
        The URL clients reach the server at, when it differs from the listen address (behind a
        proxy). Used in the binary cache's URLs and the ones given to agents.
      '';
    };

    dataDir = mkOption {
      type = types.str;
      default = "/var/lib/cairn";
      description = ''
        The state directory: the SQLite database (unless `database` names another), the first
        admin token, the caches' signing keys and the blob store with every uploaded NAR file.
      '';
    };

    database = {
      url = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "postgresql:///cairn?host=/run/postgresql&user=cairn";
        description = ''
          `postgres://...` or `sqlite:FILE`; null keeps SQLite in `dataDir`. A URL with a
          password ends up in the Nix store: put `CAIRN_DATABASE_URL=...` in `environmentFile`
          instead.
        '';
      };

      urlFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/secrets/cairn-database-url";
        description = ''
          Absolute path of a file holding the database URL alone, such as
          `postgres://cairn:PASSWORD@db.example.com/cairn`, read when the service starts
          (`LoadCredential`); it is never copied into the Nix store. Give a string, not a Nix
          path. Replicas sharing one PostgreSQL database each point at the same URL.
        '';
      };

      createLocally = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Whether to run PostgreSQL on this machine (`services.postgresql`) with a database and
          role named after `user`, reached over its Unix socket with peer authentication.
        '';
      };
    };

    blobStore = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "s3://cairn-nars?endpoint=https://s3.example.com&region=eu-west-1&path-style=true";
      description = ''
        Where NAR files live (`--blob-store`): an `s3://BUCKET[/PREFIX]?...` URL, without
        credentials (put `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` in `environmentFile`);
        null keeps them under `dataDir`. Replicas must share one bucket.
      '';
    };

    trustedProxies = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "10.0.0.2" ];
      description = ''
        Load balancers or reverse proxies (addresses, or networks such as `10.0.0.0/24`) whose
        `X-Forwarded-For` names the client (`--trusted-proxy`), so that failed authentications
        are limited per client rather than per proxy.
      '';
    };

    metrics = {
      listen = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "127.0.0.1:9464";
        description = ''
          A second address (`HOST:PORT`) serving only `GET /metrics`, without a token, for a
          Prometheus on this machine or a trusted network (`--metrics-listen`). Null: `/metrics`
          is served on the main port to tokens with the `metrics` scope only. See
          docs/observability.md.
        '';
      };

      perAgent = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Whether `/metrics` has series per agent (`cairn_agent_info`, `cairn_agent_connected`,
          ...; `--metrics-per-agent`): five series per agent, so 50,000 for 10,000 agents.
        '';
      };
    };

    backup = {
      enable = mkEnableOption "a scheduled `cairn server backup` of this server (SQLite only)";

      startAt = mkOption {
        type = types.str;
        default = "daily";
        example = "*-*-* 03:00:00";
        description = ''
          When to back up, as a systemd calendar event (`OnCalendar`). A missed run (the machine
          was off) runs at the next boot.
        '';
      };

      directory = mkOption {
        type = types.str;
        default = "/var/backup/cairn";
        description = ''
          Where the backups are written, one `cairn-<UTC time>.backup` file (mode 0600) each.
          Copy them off this machine: a backup on the disk it protects is lost with it.
        '';
      };

      keep = mkOption {
        type = types.ints.positive;
        default = 14;
        description = "How many backups to keep in `directory`; older ones are deleted.";
      };

      includeStore = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Whether each backup also holds the NAR files of the local blob store
          (`--include-store`): complete, but as large as the caches. Without it, back up
          `dataDir/blobs` with a file-level tool (its files never change once written).
        '';
      };

      tokenFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/secrets/cairn-admin-token";
        description = ''
          A file holding an admin token of the `default` workspace, read when the job starts
          (`LoadCredential`); null reads `dataDir/admin-token`, the token the first start wrote.
        '';
      };
    };

    environmentFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/secrets/cairn-server.env";
      description = ''
        An optional file of `NAME=value` lines added to the server's environment when it starts
        (systemd `EnvironmentFile`), for secrets such as `CAIRN_DATABASE_URL` with a password
        and the S3 credentials `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
      '';
    };

    logLevel = mkOption {
      type = types.enum [
        "fatal"
        "error"
        "warn"
        "info"
        "debug"
        "trace"
        "silent"
      ];
      default = "info";
      description = "Log level of the server's JSON log (in the journal).";
    };

    user = mkOption {
      type = types.str;
      default = "cairn";
      description = "User the server runs as; created when left at `cairn`.";
    };

    group = mkOption {
      type = types.str;
      default = "cairn";
      description = "Group the server runs as; created when left at `cairn`.";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion =
          lib.length (
            lib.filter (x: x) [
              cfg.database.createLocally
              (cfg.database.url != null)
              (cfg.database.urlFile != null)
            ]
          ) <= 1;
        message = "services.cairn-server: set at most one of database.url, database.urlFile and database.createLocally.";
      }
      {
        assertion = cfg.database.urlFile == null || outsideStore cfg.database.urlFile;
        message = "services.cairn-server.database.urlFile must be an absolute path outside the Nix store, such as a secret from agenix or sops-nix.";
      }
    ];

    users.users = mkIf (cfg.user == "cairn") {
      cairn = {
        isSystemUser = true;
        inherit (cfg) group;
        home = cfg.dataDir;
        description = "Cairn server";
      };
    };
    users.groups = mkIf (cfg.group == "cairn") { cairn = { }; };

    services.postgresql = mkIf cfg.database.createLocally {
      enable = true;
      ensureDatabases = [ cfg.user ];
      ensureUsers = [
        {
          name = cfg.user;
          ensureDBOwnership = true;
        }
      ];
    };

    networking.firewall.allowedTCPPorts = lib.optional cfg.openFirewall cfg.port;

    systemd.tmpfiles.rules =
      lib.optional (!stateUnderVarLib) "d '${cfg.dataDir}' 0750 ${cfg.user} ${cfg.group} - -"
      ++ lib.optional cfg.backup.enable "d '${cfg.backup.directory}' 0700 ${cfg.user} ${cfg.group} - -";

    systemd.services.cairn-server-backup = mkIf cfg.backup.enable {
      description = "Back up the Cairn server";
      after = [ "cairn-server.service" ];
      wants = [ "cairn-server.service" ];
      path = [ pkgs.coreutils ];
      serviceConfig = {
        Type = "oneshot";
        ExecStart = backupScript;
        LoadCredential = [
          "admin-token:${
            if cfg.backup.tokenFile != null then cfg.backup.tokenFile else "${cfg.dataDir}/admin-token"
          }"
        ];
        User = cfg.user;
        Group = cfg.group;
        UMask = "0077";
        ReadWritePaths = [ cfg.backup.directory ];
        NoNewPrivileges = true;
        PrivateTmp = true;
        ProtectSystem = "strict";
        ProtectHome = true;
      };
    };

    systemd.timers.cairn-server-backup = mkIf cfg.backup.enable {
      description = "Back up the Cairn server";
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnCalendar = cfg.backup.startAt;
        Persistent = true;
      };
    };

    systemd.services.cairn-server = {
      description = "Cairn server: deployments, binary cache and agent hub";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ] ++ lib.optional cfg.database.createLocally "postgresql.service";
      requires = lib.optional cfg.database.createLocally "postgresql.service";
      # xz, zstd and bzip2 read inside compressed NAR uploads.
      path = [
        pkgs.xz
        pkgs.zstd
        pkgs.bzip2
      ];
      environment = lib.optionalAttrs (databaseUrl != null) { CAIRN_DATABASE_URL = databaseUrl; };

      serviceConfig = {
        ExecStart = start;
        LoadCredential = lib.optional (cfg.database.urlFile != null) "database-url:${cfg.database.urlFile}";
        EnvironmentFile = lib.optional (cfg.environmentFile != null) cfg.environmentFile;
        User = cfg.user;
        Group = cfg.group;
        Restart = "on-failure";
        RestartSec = "5s";
        StateDirectory = mkIf stateUnderVarLib (lib.removePrefix "/var/lib/" cfg.dataDir);
        StateDirectoryMode = "0750";
        WorkingDirectory = cfg.dataDir;
        ReadWritePaths = [ cfg.dataDir ];
        UMask = "0027";

        # Hardening: the server needs its data dir, the network and child processes (xz, zstd, bzip2).
        AmbientCapabilities = lib.optional (cfg.port < 1024) "CAP_NET_BIND_SERVICE";
        CapabilityBoundingSet = lib.optional (cfg.port < 1024) "CAP_NET_BIND_SERVICE";
        NoNewPrivileges = true;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        ProtectHostname = true;
        ProtectClock = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectProc = "invisible";
        ProcSubset = "pid";
        RestrictAddressFamilies = [
          "AF_INET"
          "AF_INET6"
          "AF_UNIX"
        ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        # V8 compiles JavaScript to machine code at run time: it needs writable, executable memory.
        MemoryDenyWriteExecute = false;
        RemoveIPC = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [
          "@system-service"
          "~@privileged"
        ];
      };
    };
  };
}
