"""The benchmark results (the dict ``__main__`` writes as JSON) as printed
tables."""


def print_table(title, header, rows):
  widths = [max(len(str(r[i])) for r in [header, *rows])
            for i in range(len(header))]
  print(f"\n{title}")
  for row in [header, *rows]:
    print("  ".join(str(c).rjust(w) for c, w in zip(row, widths)))


def print_report(results):
  models = results["models"]
  print(f"\n{results['backend']} ({results['device_kind']}), "
        f"{results['num_devices']} device(s), global batch "
        f"{results['global_batch']}, {results['settings']['steps']} timed "
        f"steps")
  print_table("Train step (pre-staged batches)",
              ["model", "params", "compile s", "step ms", "steps/s", "ex/s"],
              [[n, f"{r['num_params']:,}", f"{r['compile_s']:.2f}",
                f"{r['step_ms']:.2f}", f"{r['steps_per_s']:.1f}",
                f"{r['examples_per_s']:,.0f}"] for n, r in models.items()])

  print_table("Train step against its floor (the student's forward and "
              "backward pass alone, jitted, one device)",
              ["model", "floor ms", "step ms", "teacher logits "
               "precomputed", "and a whole epoch per dispatch"],
              [[n, f"{r['floor_ms']:.2f}",
                *(f"{r[k]:.2f} ({100 * (r[k] / r['floor_ms'] - 1):+.0f}%)"
                  if k in r else "-"
                  for k in ("step_ms", "precomputed_teacher_ms",
                            "whole_epoch_ms"))]
               for n, r in models.items()])

  def overhead(r, key):
    return (f"{r[key]:.2f} ({100 * (r[key] / r['prestaged_ms'] - 1):+.0f}%)")
  print_table("Input pipeline: step ms (overhead vs pre-staged)",
              ["model", "augment", "pre-staged", "device", "host"],
              [[n, r["input"]["augment"], f"{r['input']['prestaged_ms']:.2f}",
                overhead(r["input"], "device_ms"),
                overhead(r["input"], "host_ms")] for n, r in models.items()])
  rows = [[n, m["members"], f"{m['vmapped_ms_per_member']:.2f}",
           f"{m['sequential_ms_per_member']:.2f}",
           f"{m['sequential_ms_per_member'] / m['vmapped_ms_per_member']:.2f}x",
           f"{m['vmapped_e2e_s']:.1f}", f"{m['sequential_e2e_s']:.1f}"]
          for n, m in ((n, r["members"]) for n, r in models.items()
                       if "members" in r)]
  print_table("Members: vmapped in one program vs sequential runs",
              ["model", "H", "vmap ms/member", "seq ms/member", "speedup",
               "vmap e2e s", "seq e2e s"], rows)
  if results["num_devices"] > 1:
    all_devices = str(results["num_devices"])
    print_table(f"1 vs {all_devices} devices, same global batch",
                ["model", "1: compile s", "1: ex/s", f"{all_devices}: "
                 "compile s", f"{all_devices}: ex/s", "speedup"],
                [[n, f"{d['1']['compile_s']:.2f}",
                  f"{d['1']['examples_per_s']:,.0f}",
                  f"{d[all_devices]['compile_s']:.2f}",
                  f"{d[all_devices]['examples_per_s']:,.0f}",
                  f"{d['1']['step_ms'] / d[all_devices]['step_ms']:.2f}x"]
                 for n, d in ((n, r["devices"]) for n, r in models.items())])
