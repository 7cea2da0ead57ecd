"""The methods wing: the registry (registry.py), the hooks every method shares (hooks.py), the
TSD math (tsd.py), export to stock peft (export.py), and one module per method family that
carries its own math and hooks (dash.py, lora_init.py, milora.py, eva.py). Deliberately empty:
importing one method's module must not import, or hash, every other's."""
