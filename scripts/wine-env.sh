# Sourced by the test scripts: where the Wine prefix and the Windows tools live.
# Kept out of the repository (under ~/.cache) so a clean checkout stays clean.
: "${PIPEGATE_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/pipegate}"
: "${WINEPREFIX:=$PIPEGATE_CACHE/wine}"
: "${WINEDEBUG:=-all}"
: "${WINEARCH:=win64}"
# No Wine GUI dialogs (crash or "install Mono/Gecko" prompts) in a headless run.
: "${WINEDLLOVERRIDES:=mscoree,mshtml=;winemenubuilder.exe=d}"
export PIPEGATE_CACHE WINEPREFIX WINEDEBUG WINEARCH WINEDLLOVERRIDES
