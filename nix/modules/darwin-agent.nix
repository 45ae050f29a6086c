# nix-darwin: services.cairn-agent, the Cairn agent as a launchd daemon that switches this Mac's
# nix-darwin system profile. Every option is described in docs/nixos.md.
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
  cfg = config.services.cairn-agent;

  # Nix: the one nix-darwin manages, else the one the installer put in the default profile.
  nixBin = lib.optionalString (config.nix.enable or true) "${config.nix.package}/bin:";

  # The token is read from its file when the daemon starts: never in the Nix store or the plist.
  start = pkgs.writeShellScript "cairn-agent-start" ''
    set -eu
    ${lib.optionalString (cfg.environmentFile != null) ''
      set -a
      . ${lib.escapeShellArg cfg.environmentFile}
      set +a
    ''}
    ${lib.optionalString (cfg.tokenFile != null) ''
      CAIRN_AGENT_TOKEN="$(< ${lib.escapeShellArg cfg.tokenFile})"
      export CAIRN_AGENT_TOKEN
    ''}
    mkdir -p ${lib.escapeShellArg cfg.stateDir}
    exec ${cfg.package}/bin/cairn deploy agent ${
      lib.escapeShellArgs [
        cfg.name
        cfg.profile
        "--state-dir"
        cfg.stateDir
      ]
    }${lib.optionalString (cfg.enrolTokenFile != null) " --enrol --enrol-token-file ${lib.escapeShellArg cfg.enrolTokenFile}"}
  '';
in
{
  options.services.cairn-agent = {
    enable = mkEnableOption "the Cairn agent, which deploys what a Cairn server says to this Mac";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ../agent.nix { cairn = pkgs.callPackage ../package.nix { }; };
      defaultText = literalExpression "the cairn-agent package of this repository (nix/agent.nix)";
      description = "The Cairn package whose `cairn` runs the agent.";
    };

    name = mkOption {
      type = types.str;
      default = if config.networking.hostName != null then config.networking.hostName else "";
      defaultText = literalExpression "config.networking.hostName";
      description = "This agent's name, as created with `cairn agent create NAME`.";
    };

    serverUrl = mkOption {
      type = types.str;
      example = "https://cairn.example.com";
      description = "URL of the Cairn server (`CAIRN_SERVER`).";
    };

    tokenFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/agenix/cairn-agent-token";
      description = ''
        File holding this agent's token (or give `enrolTokenFile`), read by the daemon when it
        starts; never copied into the Nix store. Give a string, not a Nix path literal.
      '';
    };

    enrolTokenFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/agenix/cairn-enrol-token";
      description = ''
        Instead of `tokenFile`: a file holding an enrolment token (`cairn agent enrol-token
        create`). At its first start the agent registers itself under `name` with it
        (`cairn deploy agent --enrol`) and stores its own token, mode 0600, in `stateDir`; every
        later start uses that token. A string outside the Nix store, as `tokenFile`.
      '';
    };

    profile = mkOption {
      type = types.str;
      default = "system";
      description = "The profile the agent switches: `system` for nix-darwin, or an absolute path.";
    };

    workspace = mkOption {
      type = types.str;
      default = "default";
      description = "The server workspace this agent belongs to (`CAIRN_WORKSPACE`).";
    };

    stateDir = mkOption {
      type = types.str;
      default = "/var/lib/cairn-agent/${cfg.name}";
      defaultText = literalExpression ''"/var/lib/cairn-agent/''${config.services.cairn-agent.name}"'';
      description = "Where the agent keeps its journal, locks, GC roots and activation logs: its own, per agent name.";
    };

    environmentFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "An optional file of `NAME=value` lines added to the agent's environment at start.";
    };

    logFile = mkOption {
      type = types.str;
      default = "/var/log/cairn-agent.log";
      description = "Where launchd writes the agent's output.";
    };

    primaryUser = mkOption {
      type = types.nullOr types.str;
      default = config.system.primaryUser or null;
      defaultText = literalExpression "config.system.primaryUser or null";
      description = ''
        The user a legacy `activate-user` (nix-darwin before 25.05) runs as, with
        `sudo --user`, as darwin-rebuild runs it (`CAIRN_AGENT_PRIMARY_USER`). Without it the
        agent refuses a closure with such a script.
      '';
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = (cfg.tokenFile == null) != (cfg.enrolTokenFile == null);
        message = "services.cairn-agent: set exactly one of tokenFile and enrolTokenFile.";
      }
      {
        assertion = lib.all (f: f == null || (lib.hasPrefix "/" f && !lib.hasPrefix builtins.storeDir f)) [
          cfg.tokenFile
          cfg.enrolTokenFile
        ];
        message = "services.cairn-agent.tokenFile and enrolTokenFile must be absolute paths outside the Nix store, such as secrets from agenix or sops-nix.";
      }
      {
        assertion = cfg.name != "";
        message = "services.cairn-agent.name must be set (networking.hostName is not).";
      }
    ];

    launchd.daemons.cairn-agent.serviceConfig = {
      # At boot /nix/store may not be mounted yet: wait for it before running anything from it.
      ProgramArguments = [
        "/bin/sh"
        "-c"
        "/bin/wait4path /nix/store && exec ${start}"
      ];
      RunAtLoad = true;
      # Restarted when it exits with an error, as systemd's Restart=on-failure.
      KeepAlive.SuccessfulExit = false;
      ThrottleInterval = 10;
      # darwin-rebuild activation reloads changed daemons, this one too: the activation the agent
      # started must survive it, as with systemd's KillMode=process.
      AbandonProcessGroup = true;
      StandardOutPath = cfg.logFile;
      StandardErrorPath = cfg.logFile;
      EnvironmentVariables = {
        CAIRN_SERVER = cfg.serverUrl;
        CAIRN_WORKSPACE = cfg.workspace;
        # Activation runs as root with root's HOME.
        HOME = "/var/root";
        PATH = "${nixBin}/run/current-system/sw/bin:/nix/var/nix/profiles/default/bin:/usr/bin:/bin:/usr/sbin:/sbin";
      }
      // lib.optionalAttrs (cfg.primaryUser != null) { CAIRN_AGENT_PRIMARY_USER = cfg.primaryUser; };
    };
  };
}
