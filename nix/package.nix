# Cairn, built from this repository with buildNpmPackage: the `cairn` executable with every
# command (server, agent, CLI). For machines that only run the agent, ./agent.nix is smaller.
{
  lib,
  stdenv,
  buildNpmPackage,
  importNpmLock,
  nodejs,
}:

let
  root = ../.;
  packageJson = lib.importJSON (root + "/package.json");
  packageLock = lib.importJSON (root + "/package-lock.json");

  # npm's names for this platform, as package-lock.json lists them under `os` and `cpu`.
  npmOs = stdenv.hostPlatform.parsed.kernel.name;
  npmCpu =
    {
      x86_64 = "x64";
      aarch64 = "arm64";
      i686 = "ia32";
      armv7l = "arm";
    }
    .${stdenv.hostPlatform.parsed.cpu.name} or stdenv.hostPlatform.parsed.cpu.name;
  # `os: ["!win32"]` excludes one platform; `os: ["linux"]` includes only the ones listed.
  allows =
    value: list:
    let
      excluded = lib.filter (lib.hasPrefix "!") list;
      included = lib.filter (x: !lib.hasPrefix "!" x) list;
    in
    !(lib.elem "!${value}" excluded) && (included == [ ] || lib.elem value included);
  npmLibc = if stdenv.hostPlatform.isMusl then "musl" else "glibc";
  forThisPlatform =
    module:
    allows npmOs (module.os or [ ])
    && allows npmCpu (module.cpu or [ ])
    && (npmOs != "linux" || allows npmLibc (module.libc or [ ]));

  # The lockfile is written without `resolved` URLs (npm's omit-lockfile-registry-resolved), and
  # Nix fetches each package by URL and integrity hash: give each the registry's URL. Optional
  # packages for other platforms (esbuild's two dozen native binaries) get none, so Nix does not
  # fetch them; npm skips them anyway.
  registryUrl =
    key: module:
    let
      name = module.name or (lib.last (lib.splitString "node_modules/" key));
      baseName = lib.last (lib.splitString "/" name);
    in
    "https://registry.npmjs.org/${name}/-/${baseName}-${module.version}.tgz";
  fetchable =
    key: module:
    key != ""
    && !(module.link or false)
    && !(module.inBundle or false)
    && !(module ? resolved)
    && module ? version
    && module ? integrity
    && (!(module.optional or false) || forThisPlatform module);
  lockWithUrls = packageLock // {
    packages = lib.mapAttrs (
      key: module:
      if fetchable key module then module // { resolved = registryUrl key module; } else module
    ) packageLock.packages;
  };
in
buildNpmPackage {
  pname = "cairn";
  inherit (packageJson) version;
  inherit nodejs;

  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      ../package.json
      ../package-lock.json
      ../tsconfig.json
      ../bin
      ../scripts
      ../src
      (lib.fileset.maybeMissing ../contrib)
      (lib.fileset.maybeMissing ../docs)
      (lib.fileset.maybeMissing ../README.md)
    ];
  };

  # Every package is fetched on its own, by the integrity hash in package-lock.json: no
  # npmDepsHash to keep in step with the lockfile.
  npmDeps = importNpmLock {
    package = packageJson;
    packageLock = lockWithUrls;
  };
  npmConfigHook = importNpmLock.npmConfigHook;

  # `npm run build` (esbuild) makes dist/cairn.mjs; `npm pack`, which lists the files to install,
  # need not build it again.
  npmPackFlags = [ "--ignore-scripts" ];

  meta = {
    description = "Pull-based continuous deployment for fleets of Nix machines";
    license = lib.licenses.mit;
    mainProgram = "cairn";
    platforms = lib.platforms.linux ++ lib.platforms.darwin;
  };
}
