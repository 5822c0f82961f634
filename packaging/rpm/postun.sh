# symbolon %postun ($1: 0 = erased, 1 = upgraded). RPM has no purge: the state in
# /var/lib/symbolon and /etc/symbolon/hsm-pin stay after an erase (docs/install.md).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart symbolon.service >/dev/null 2>&1 || :
    fi
fi
exit 0
