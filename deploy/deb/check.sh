#!/usr/bin/env bash
# Checks a hatarget .deb (make deb-check, part of make test): its control
# file, its contents with their modes, its maintainer scripts, and, where
# systemd-analyze exists, the unit it ships.
#
#   deploy/deb/check.sh PACKAGE.deb
set -euo pipefail

deb=$1
fail=0
bad() { echo "deb-check: $*" >&2; fail=1; }

info=$(dpkg-deb --info "$deb")
for field in Package:\ hatarget Architecture: Version: Maintainer: Installed-Size: Depends:\ adduser Section: Priority: Description:; do
	grep -q "^ $field" <<<"$info" || bad "control file lacks $field"
done
for script in postinst prerm postrm conffiles md5sums; do
	grep -qE "^ +[0-9]+ bytes, +[0-9]+ lines +\*? *$script( |$)" <<<"$info" || bad "no $script in the control archive"
done
grep -qE '^ +[0-9]+ bytes, +[0-9]+ lines +\* +postinst ' <<<"$info" || bad "postinst is not executable"
[[ $(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles) == /etc/hatarget/agent.toml ]] || bad "conffiles is not /etc/hatarget/agent.toml"

# mode owner path, as dpkg-deb --contents prints them.
contents=$(dpkg-deb --contents "$deb" | awk '{print $1, $2, $6}')
want=(
	"-rwxr-xr-x root/root ./usr/bin/hatarget"
	"-rw-r--r-- root/root ./lib/systemd/system/hatarget.service"
	"-rw-r----- root/root ./etc/hatarget/agent.toml"
	"-rw-r--r-- root/root ./usr/share/bash-completion/completions/hatarget"
	"-rw-r--r-- root/root ./usr/share/zsh/vendor-completions/_hatarget"
	"-rw-r--r-- root/root ./usr/share/fish/vendor_completions.d/hatarget.fish"
	"-rw-r--r-- root/root ./usr/share/man/man1/hatarget.1.gz"
	"-rw-r--r-- root/root ./usr/share/man/man1/hatarget-agent.1.gz"
	"-rw-r--r-- root/root ./usr/share/doc/hatarget/copyright"
	"-rw-r--r-- root/root ./usr/share/doc/hatarget/changelog.gz"
)
for w in "${want[@]}"; do
	grep -qxF -- "$w" <<<"$contents" || bad "missing or with other mode/owner: $w"
done
grep -v ' root/root ' <<<"$contents" && bad "files not owned by root in the package"

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
dpkg-deb --extract "$deb" "$dir"
"$dir/usr/bin/hatarget" gen config | cmp -s - "$dir/etc/hatarget/agent.toml" || bad "agent.toml differs from what its binary generates"
if command -v systemd-analyze >/dev/null; then
	# The unit names /usr/bin/hatarget, which need not exist here.
	sed "s#/usr/bin/hatarget#$dir/usr/bin/hatarget#" "$dir/lib/systemd/system/hatarget.service" >"$dir/hatarget.service"
	# Documentation=man:... is checked with man(1), where it is installed.
	man=no
	command -v man >/dev/null && man=yes
	MANPATH="$dir/usr/share/man" systemd-analyze verify --man=$man "$dir/hatarget.service" || bad "systemd-analyze verify failed"
else
	echo "deb-check: no systemd-analyze here; the unit was not verified" >&2
fi

if command -v lintian >/dev/null; then
	if ! report=$(lintian --fail-on error,warning "$deb" 2>&1); then
		bad "lintian reports errors or warnings:"$'\n'"$report"
	fi
elif [[ ${CI:-} == true ]]; then
	bad "lintian not installed (.ci/run installs it)"
else
	echo "deb-check: no lintian here; the package was not reviewed" >&2
fi

((fail == 0)) && echo "deb-check: $deb ok ($(wc -l <<<"$contents") entries)"
exit $fail
