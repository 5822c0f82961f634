# symbolon %preun ($1: 0 = erase, 1 = upgrade): stop and disable on erase only.
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl stop symbolon.service >/dev/null 2>&1 || :
    fi
    systemctl --no-reload disable symbolon.service >/dev/null 2>&1 || :
fi
exit 0
