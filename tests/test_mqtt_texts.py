"""node/core/mqtt.py and mqttwire.py keep their error texts in one string
constant each, picked by number (_text(n) with private _E_* const()
numbers: one heap object on a board instead of one per text).  This pins
that every number names the text it means and is used with its arguments."""
import re

import pytest

from node.core import mqtt, mqttwire

# A word of each text, by module and number name.
WORDS = {
    mqtt: {"_E_VERSION": "version", "_E_EMPTY_ID": "client id", "_E_PASSWORD": "password",
           "_E_WILL_QOS": "will QoS", "_E_KEEPALIVE": "keepalive", "_E_FRESH": "fresh",
           "_E_QOS": "QoS", "_E_NOT_CONNECTED": "not connected", "_E_NO_FILTERS": "no filters",
           "_E_SUB_QOS": "subscription QoS", "_E_OVER_MAX": "Maximum Packet Size",
           "_E_MEMORY": "out of memory", "_E_INTERNAL": "internal"},
    mqttwire: {"_E_TYPE": "packet type %d flags", "_E_LENGTH": "4 bytes",
               "_E_TOO_BIG": "exceeds limit", "_E_CONNACK": "CONNACK",
               "_E_EARLY": "before CONNACK", "_E_QOS2": "QoS 2",
               "_E_PUBLISH": "truncated PUBLISH", "_E_UTF8": "UTF-8",
               "_E_PID0": "packet id 0", "_E_PUBACK": "PUBACK",
               "_E_SUBACK": "truncated SUBACK", "_E_SUBACK_CODE": "return code",
               "_E_SUBACK_COUNT": "codes for", "_E_PINGRESP": "PINGRESP"},
}


def numbers(mod):
    src = open(mod.__file__).read()
    return src, dict((k, int(v)) for k, v in
                     re.findall(r"^(_E_\w+) = const\((\d+)\)", src, re.M))


@pytest.mark.parametrize("mod", [mqtt, mqttwire], ids=["mqtt", "mqttwire"])
def test_every_error_number_names_its_text(mod):
    _, nums = numbers(mod)
    assert sorted(nums) == sorted(WORDS[mod])
    assert sorted(nums.values()) == list(range(len(nums)))
    for name, n in nums.items():
        assert WORDS[mod][name] in mod._text(n), (name, mod._text(n))
    with pytest.raises(IndexError):      # no text without a number
        mod._text(len(nums))


@pytest.mark.parametrize("mod", [mqtt, mqttwire], ids=["mqtt", "mqttwire"])
def test_every_number_is_used_with_its_arguments(mod):
    src, nums = numbers(mod)
    for name, n in nums.items():
        uses = re.findall(r"\b%s\b(.*)" % name, src)[1:]     # after the definition
        assert uses, name + " unused"
        want = mod._text(n).count("%")
        for rest in uses:
            if rest.startswith(")") and " % " not in rest:
                assert want == 0, (name, rest)          # _error(c, _E_X) / _text(_E_X)
            elif rest.startswith(", "):
                # _error(c, _E_X, a, b): as many arguments as the text has %s
                args = rest[2:rest.rindex(")")]
                assert want == len(re.split(r",\s*(?![^()]*\))", args)), (name, rest)
