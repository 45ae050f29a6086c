# Cairn as a flake: `nix run 'github:OWNER/cairn?dir=nix' -- --version`, or as an input:
#   inputs.cairn.url = "github:OWNER/cairn?dir=nix";
#   modules = [ inputs.cairn.nixosModules.cairn-agent ];
# Packages: cairn (every command) and cairn-agent (the bundle and Node.js, nothing native).
{
  description = "Cairn: pull-based continuous deployment for fleets of Nix machines";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (
        pkgs:
        let
          cairn = pkgs.callPackage ./package.nix { };
        in
        {
          inherit cairn;
          cairn-agent = pkgs.callPackage ./agent.nix { inherit cairn; };
          default = cairn;
        }
      );

      overlays.default = final: _prev: {
        cairn = final.callPackage ./package.nix { };
        cairn-agent = final.callPackage ./agent.nix { };
      };

      nixosModules = {
        cairn-agent = ./modules/nixos-agent.nix;
        cairn-server = ./modules/nixos-server.nix;
      };
      darwinModules.cairn-agent = ./modules/darwin-agent.nix;
      homeManagerModules.cairn-agent = ./modules/home-manager-agent.nix;
      homeModules.cairn-agent = ./modules/home-manager-agent.nix;

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            pkgs.nodejs
            pkgs.nix
            pkgs.xz
            pkgs.zstd
            pkgs.bzip2
          ];
        };
      });
    };
}
