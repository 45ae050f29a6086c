# Cairn without flakes: `nix-build nix -A cairn`, `nix-build nix -A cairn-agent`, or
# `imports = [ (import /path/to/cairn/nix { }).modules.nixos-agent ];`.
{
  pkgs ? import <nixpkgs> { },
}:

let
  cairn = pkgs.callPackage ./package.nix { };
in
{
  inherit cairn;
  cairn-agent = pkgs.callPackage ./agent.nix { inherit cairn; };
  modules = {
    nixos-agent = ./modules/nixos-agent.nix;
    nixos-server = ./modules/nixos-server.nix;
    darwin-agent = ./modules/darwin-agent.nix;
    home-manager-agent = ./modules/home-manager-agent.nix;
  };
}
