# Home Manager: services.cairn-agent, the Cairn agent as a systemd user service that deploys this
# user's Home Manager configuration. Every option is described in docs/nixos.md.
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

  # Nix from the options, then wherever NixOS or the Nix installer put it.
  searchPath = lib.concatStringsSep ":" [
    (lib.makeBinPath cfg.path)
    "/run/current-system/sw/bin"
    "/nix/var/nix/profiles/default/bin"
    "/usr/local/bin"
    "/usr/bin"
    "/bin"
  ];

  # The token is read from its file when the service starts: never in the Nix store or the unit.
  start = pkgs.writeShellScript "cairn-agent-start" ''
    set -eu
    ${lib.optionalString (cfg.tokenFile != null) ''
      CAIRN_AGENT_TOKEN="$(< ${lib.escapeShellArg cfg.tokenFile})"
      export CAIRN_AGENT_TOKEN
    ''}
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
    enable = mkEnableOption "the Cairn agent, which deploys this user's Home Manager configuration";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ../agent.nix { cairn = pkgs.callPackage ../package.nix { }; };
      defaultText = literalExpression "the cairn-agent package of this repository (nix/agent.nix)";
      description = "The Cairn package whose `cairn` runs the agent.";
    };

    name = mkOption {
      type = types.str;
      example = "alice-laptop";
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
      example = "/run/user/1000/agenix/cairn-agent-token";
      description = ''
        File holding this agent's token (or give `enrolTokenFile`), read when the service starts; never copied into the
        Nix store. Give a string, not a Nix path literal.
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
      default = "${config.xdg.stateHome}/nix/profiles/home-manager";
      defaultText = literalExpression ''"''${config.xdg.stateHome}/nix/profiles/home-manager"'';
      description = ''
        The Home Manager profile the agent switches. Set it to
        `/nix/var/nix/profiles/per-user/USER/home-manager` where Home Manager still uses the
        legacy location.
      '';
    };

    workspace = mkOption {
      type = types.str;
      default = "default";
      description = "The server workspace this agent belongs to (`CAIRN_WORKSPACE`).";
    };

    stateDir = mkOption {
      type = types.str;
      default = "${config.xdg.stateHome}/cairn-agent/${cfg.name}";
      defaultText = literalExpression ''"''${config.xdg.stateHome}/cairn-agent/''${config.services.cairn-agent.name}"'';
      description = "Where the agent keeps its journal, locks, GC roots and activation logs: its own, per agent name.";
    };

    environmentFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "An optional file of `NAME=value` lines added to the agent's environment at start.";
    };

    backupFileExtension = mkOption {
      type = types.nullOr (types.strMatching "[A-Za-z0-9][A-Za-z0-9._+-]*");
      default = null;
      example = "backup";
      description = ''
        When set, a file in the way of one Home Manager links is moved to `<file>.<extension>`
        instead of failing the activation (`HOME_MANAGER_BACKUP_EXT`, as `home-manager switch -b`).
      '';
    };

    path = mkOption {
      type = types.listOf types.package;
      default = lib.optional (config.nix.package != null) config.nix.package;
      defaultText = literalExpression "lib.optional (config.nix.package != null) config.nix.package";
      description = ''
        Packages put first on the agent's PATH. Nix is looked for there, then in
        /run/current-system/sw/bin and /nix/var/nix/profiles/default/bin.
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
    ];

    systemd.user.services.cairn-agent = {
      Unit = {
        Description = "Cairn agent: deploys this user's Home Manager configuration";
        # Home Manager's switch (sd-switch) leaves a running agent alone: it may be running the
        # very activation that switches. A changed agent takes over at its next restart.
        X-SwitchMethod = "keep-old";
        X-RestartIfChanged = false;
      };
      Service = {
        Type = "exec";
        ExecStart = "${start}";
        Environment = [
          "CAIRN_SERVER=${cfg.serverUrl}"
          "CAIRN_WORKSPACE=${cfg.workspace}"
          "PATH=${searchPath}"
        ]
        ++ lib.optional (cfg.backupFileExtension != null) "HOME_MANAGER_BACKUP_EXT=${cfg.backupFileExtension}";
        EnvironmentFile = lib.optional (cfg.environmentFile != null) cfg.environmentFile;
        Restart = "on-failure";
        RestartSec = 5;
        # Stopping the agent must not kill an activation it started: only the main process goes.
        KillMode = "process";
      };
      Install.WantedBy = [ "default.target" ];
    };
  };
}
