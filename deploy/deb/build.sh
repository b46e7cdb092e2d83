#!/usr/bin/env bash
# Builds the Debian package of hatarget with dpkg-deb alone (make deb).
#
#   deploy/deb/build.sh BINARY VERSION GOARCH OUTDIR
#
# BINARY is a static hatarget built for GOARCH; the default configuration
# file, the shell completions and the man pages come from it, so they match
# its flags and commands. Prints the path of the .deb.
set -euo pipefail

bin=$(realpath "$1") version=$2 goarch=$3 out=$4
maintainer=${DEB_MAINTAINER:-hatarget maintainers <maintainers@hatarget.invalid>}
here=$(cd "$(dirname "$0")" && pwd)
deploy=$(dirname "$here")

# Debian versions start with a digit and sort with ~ and +:
# v0.1.0 -> 0.1.0, v0.1.0-3-gabc1234-dirty -> 0.1.0+3.gabc1234.dirty,
# a bare commit abc1234 -> 0~git.abc1234.
debver=$(sed -E 's/^v//; s/-([0-9]+)-g([0-9a-f]+)/+\1.g\2/; s/-dirty$/.dirty/' <<<"$version")
[[ $debver =~ ^[0-9] ]] || debver="0~git.$debver"

case $goarch in
amd64 | arm64 | riscv64 | s390x) arch=$goarch ;;
386) arch=i386 ;;
arm) arch=armhf ;;
ppc64le) arch=ppc64el ;;
*) echo "build.sh: no Debian architecture for GOARCH $goarch" >&2; exit 1 ;;
esac

# Reproducible: file dates and man page dates come from the last commit.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$deploy" log -1 --format=%ct 2>/dev/null || date +%s)}

root=$(mktemp -d)
chmod 0755 "$root"
trap 'rm -rf "$root"' EXIT
umask 022

install -D -m 0755 "$bin" "$root/usr/bin/hatarget"
install -D -m 0644 "$deploy/systemd/hatarget.service" "$root/lib/systemd/system/hatarget.service"
# 0640: it may hold the API token; postinst gives it to group hatarget,
# which does not exist when the package is built.
install -d -m 0755 "$root/etc/hatarget"
"$bin" gen config >"$root/etc/hatarget/agent.toml"
chmod 0640 "$root/etc/hatarget/agent.toml"

install -d "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
	"$root/usr/share/fish/vendor_completions.d" "$root/usr/share/man/man1" "$root/usr/share/doc/hatarget"
"$bin" completion bash >"$root/usr/share/bash-completion/completions/hatarget"
"$bin" completion zsh >"$root/usr/share/zsh/vendor-completions/_hatarget"
"$bin" completion fish >"$root/usr/share/fish/vendor_completions.d/hatarget.fish"
"$bin" gen man "$root/usr/share/man/man1"
gzip -9n "$root"/usr/share/man/man1/*.1

install -m 0644 "$here/copyright" "$root/usr/share/doc/hatarget/copyright"
install -D -m 0644 "$here/lintian-overrides" "$root/usr/share/lintian/overrides/hatarget"
{
	echo "hatarget ($debver) unstable; urgency=medium"
	echo
	echo "  * Built from hatarget $version."
	echo
	echo " -- $maintainer  $(date -R -u -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$root/usr/share/doc/hatarget/changelog.gz"

install -d "$root/DEBIAN"
install -m 0755 "$here/postinst" "$here/prerm" "$here/postrm" "$root/DEBIAN/"
echo /etc/hatarget/agent.toml >"$root/DEBIAN/conffiles"
cat >"$root/DEBIAN/control" <<CONTROL
Package: hatarget
Version: $debver
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: adduser
Section: net
Priority: optional
Description: clustered highly available iSCSI target
 hatarget serves SCSI disks over iSCSI from files and block devices. Its
 nodes agree on every target, LUN, ACL and reservation through Raft, detect
 failures with gossip, and every node serves every target as an ALUA port
 group, with LUNs replicated between the nodes' disks or on shared storage.
 .
 This package installs the static hatarget binary, the hatarget.service
 systemd unit (not started or enabled on install), its settings in
 /etc/hatarget/agent.toml, shell completions and man pages.
CONTROL
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
find "$root" -newermt "@$SOURCE_DATE_EPOCH" -print0 | xargs -0 touch --no-dereference --date="@$SOURCE_DATE_EPOCH"

mkdir -p "$out"
deb="$out/hatarget_${debver}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
