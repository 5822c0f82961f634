# symbolon %pre: the system user and group must exist before the files are
# unpacked (/etc/symbolon/symbolon.toml is root:symbolon).
if command -v systemd-sysusers >/dev/null 2>&1; then
    echo 'u symbolon - "Symbolon authentication server" /var/lib/symbolon /usr/sbin/nologin' |
        systemd-sysusers --replace=/usr/lib/sysusers.d/symbolon.conf -
elif ! getent passwd symbolon >/dev/null; then
    useradd --system --user-group --home-dir /var/lib/symbolon --no-create-home \
        --shell /usr/sbin/nologin --comment "Symbolon authentication server" symbolon
fi
exit 0
