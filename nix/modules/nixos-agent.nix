# NixOS: services.cairn-agent, the Cairn agent as a systemd service that keeps one connection to
# a Cairn server and switches this machine's system profile to what it is told. Every option is
# described in docs/nixos.md.
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

  # The token is read where systemd put it (LoadCredential) when the service starts: never in
  # the Nix store, the unit file or the command line.
  start = pkgs.writeShellScript "cairn-agent-start" ''
    set -eu
    ${lib.optionalString (cfg.tokenFile != null) ''
      CAIRN_AGENT_TOKEN="$(< "$CREDENTIALS_DIRECTORY/agent-token")"
      export CAIRN_AGENT_TOKEN
    ''}
    exec ${cfg.package}/bin/cairn deploy agent ${
      lib.escapeShellArgs [
        cfg.name
        cfg.profile
        "--state-dir"
        cfg.stateDir
      ]
    }${lib.optionalString (cfg.enrolTokenFile != null) " --enrol --enrol-token-file \"$CREDENTIALS_DIRECTORY/enrol-token\""}
  '';
  stateUnderVarLib = lib.hasPrefix "/var/lib/" cfg.stateDir;
in
{
  options.services.cairn-agent = {
    enable = mkEnableOption "the Cairn agent, which deploys what a Cairn server says to this machine";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ../agent.nix { cairn = pkgs.callPackage ../package.nix { }; };
      defaultText = literalExpression "the cairn-agent package of this repository (nix/agent.nix)";
      description = "The Cairn package whose `cairn` runs the agent.";
    };

    name = mkOption {
      type = types.str;
      default = config.networking.hostName;
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
        File holding this agent's token (as printed by `cairn agent create`), such as a secret
        managed by agenix or sops-nix. systemd hands it to the service at start
        (`LoadCredential`); it is never copied into the Nix store. Give a string, not a Nix path
        literal, which would copy the file into the store.
        Give this or `enrolTokenFile`.
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
      description = ''
        The profile the agent switches: a name under /nix/var/nix/profiles (`system` for the
        NixOS configuration) or an absolute path.
      '';
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
      example = "/run/secrets/cairn-agent.env";
      description = ''
        An optional file of `NAME=value` lines added to the agent's environment when it starts
        (systemd `EnvironmentFile`), for settings that must stay out of the Nix store.
      '';
    };

    preSwitchChecks = mkOption {
      type = types.enum [
        "fail"
        "boot"
      ];
      default = "fail";
      description = ''
        What a switch whose pre-switch checks fail does (`CAIRN_AGENT_PRE_SWITCH_CHECKS`): `fail`
        the deployment with the checks' message (nothing is activated), or install it with
        `switch-to-configuration boot` for the next boot, reporting that a reboot is required.
      '';
    };

    specialisation = mkOption {
      type = types.nullOr (types.strMatching "[A-Za-z0-9_][A-Za-z0-9_.+-]*");
      default = null;
      example = "work";
      description = ''
        The specialisation every deployment switches to (`CAIRN_AGENT_SPECIALISATION`), as
        `nixos-rebuild switch --specialisation`; a system without it is refused. When null, the
        agent keeps the machine on the specialisation it runs, if the new system has it.
      '';
    };

    path = mkOption {
      type = types.listOf types.package;
      default = [ ];
      example = literalExpression "[ pkgs.curl ]";
      description = ''
        Packages added to the agent's PATH, for health checks that call them. Nix itself
        (`config.nix.package`) and systemd's usual tools are always there.
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
        message = "services.cairn-agent.name must be set (it defaults to networking.hostName).";
      }
    ];

    systemd.tmpfiles.rules = lib.optional (!stateUnderVarLib) "d '${cfg.stateDir}' 0700 root root - -";

    systemd.services.cairn-agent = {
      description = "Cairn agent: deploys what the Cairn server says to this machine";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [
        "network-online.target"
        "nix-daemon.service"
      ];
      path = [ config.nix.package ] ++ cfg.path;
      environment = {
        CAIRN_SERVER = cfg.serverUrl;
        CAIRN_AGENT_PRE_SWITCH_CHECKS = cfg.preSwitchChecks;
        CAIRN_WORKSPACE = cfg.workspace;
      }
      // lib.optionalAttrs (cfg.specialisation != null) {
        CAIRN_AGENT_SPECIALISATION = cfg.specialisation;
      };

      # The agent may itself be running the switch-to-configuration that would restart or stop
      # it: the switch leaves it alone. Once the server has the deployment's result, an agent
      # whose unit (`systemctl cat`) or program changed exits with 75 to be restarted as the new
      # version (RestartForceExitStatus below; docs/activation.md).
      restartIfChanged = false;
      unitConfig."X-StopOnRemoval" = false;

      serviceConfig = {
        Type = "exec";
        ExecStart = start;
        LoadCredential =
          lib.optional (cfg.tokenFile != null) "agent-token:${cfg.tokenFile}"
          ++ lib.optional (cfg.enrolTokenFile != null) "enrol-token:${cfg.enrolTokenFile}";
        EnvironmentFile = lib.optional (cfg.environmentFile != null) cfg.environmentFile;
        Restart = "on-failure";
        RestartSec = "5s";
        # 75: the agent stops to run its new version; not a failure, and always restarted.
        SuccessExitStatus = [ 75 ];
        RestartForceExitStatus = [ 75 ];
        # Stopping the agent must not kill an activation it started: only the main process goes.
        KillMode = "process";
        StateDirectory = mkIf stateUnderVarLib (lib.removePrefix "/var/lib/" cfg.stateDir);
        StateDirectoryMode = "0700";
      };
    };
  };
}
