# The Cairn agent alone: the bundled `cairn` (dist/cairn.mjs) and Node.js, without node_modules.
# Every command is there, but `cairn server` needs better-sqlite3 and so the full ./package.nix;
# what a machine running `cairn deploy agent` needs is Node.js and nix, and this is all it gets.
{
  lib,
  cairn,
  makeWrapper,
  nodejs,
}:

cairn.overrideAttrs (old: {
  pname = "cairn-agent";

  # No install scripts: they only build better-sqlite3, which the bundle leaves out. The build
  # itself (esbuild) needs no native module either.
  npmRebuildFlags = [ "--ignore-scripts" ];

  nativeBuildInputs = old.nativeBuildInputs ++ [ makeWrapper ];

  installPhase = ''
    runHook preInstall
    mkdir -p $out/lib/cairn $out/bin
    cp dist/cairn.mjs dist/cairn.mjs.map $out/lib/cairn/
    makeWrapper ${lib.getExe nodejs} $out/bin/cairn \
      --add-flags "--enable-source-maps $out/lib/cairn/cairn.mjs"
    runHook postInstall
  '';

  meta = old.meta // {
    description = "The Cairn agent: deploys what a Cairn server says to this machine's Nix profile";
  };
})
