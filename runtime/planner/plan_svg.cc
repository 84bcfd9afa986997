#include "runtime/planner/plan_svg.h"

#include <fmt/format.h>

#include <algorithm>

namespace moreh::planner {

std::string PlanToSvg(const Plan& plan, const ClusterSpec& cl) {
  static const char* kColors[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                                  "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};
  const Candidate& c = plan.chosen;
  const int per_node = cl.devices_per_node, nodes = cl.num_devices / per_node;
  const int box_w = 86, box_h = 34, gap = 6, left = 90, top = 60;
  const int grid_h = nodes * (box_h + gap);
  const int bars_top = top + grid_h + 40;
  const int num_stages = std::max(1, c.num_stages);
  const int width = std::max(left + per_node * (box_w + gap) + 20, 1040);
  const int height = bars_top + num_stages * 26 + 50;
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" "
      "font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" "
      "fill=\"white\"/>\n<text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">{}</text>\n"
      "<text x=\"10\" y=\"40\">{:.0f} tokens/s, step {:.3f} s, MFU {:.1f}%, bubble {:.0f}% — {}"
      "</text>\n",
      width, height, c.Describe(), c.tokens_per_s, c.step_time, 100 * c.mfu,
      100 * c.bubble_fraction, cl.name);
  for (int n = 0; n < nodes; ++n) {
    s += fmt::format("<text x=\"10\" y=\"{}\">node {}</text>\n", top + n * (box_h + gap) + 21, n);
  }
  // Rank order: tensor-parallel ranks innermost, then data-parallel, then pipeline stages.
  for (int r = 0; r < cl.num_devices; ++r) {
    const int tp = r % c.tp, dp = (r / c.tp) % c.dp, stage = r / (c.tp * c.dp);
    const int x = left + (r % per_node) * (box_w + gap), y = top + (r / per_node) * (box_h + gap);
    s += fmt::format(
        "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"4\" fill=\"{}\"/>"
        "<text x=\"{}\" y=\"{}\" fill=\"white\">S{} dp{} tp{}</text>\n",
        x, y, box_w, box_h, kColors[stage % 10], x + 6, y + 21, stage, dp, tp);
  }
  const double cap = static_cast<double>(plan.device_memory);
  const int bar_w = width - left - 120;
  s += fmt::format(
      "<text x=\"10\" y=\"{}\" font-weight=\"bold\">peak memory per device "
      "(budget {:.1f} GiB, device {:.1f} GiB)</text>\n",
      bars_top - 10, plan.budget_bytes / (1 << 30), cap / (1 << 30));
  for (int st = 0; st < num_stages && st < static_cast<int>(c.stage_peak_bytes.size()); ++st) {
    const double bytes = static_cast<double>(c.stage_peak_bytes[st]);
    const int y = bars_top + st * 26;
    s += fmt::format(
        "<text x=\"10\" y=\"{}\">S{} ({} layers)</text><rect x=\"{}\" y=\"{}\" width=\"{}\" "
        "height=\"16\" fill=\"#eeeeee\"/><rect x=\"{}\" y=\"{}\" width=\"{:.0f}\" height=\"16\" "
        "fill=\"{}\"/><text x=\"{}\" y=\"{}\">{:.2f} GiB</text>\n",
        y + 12, st, c.stage_layers[st], left, y, bar_w, left, y, bar_w * bytes / cap,
        kColors[st % 10], left + bar_w + 6, y + 12, bytes / (1 << 30));
  }
  const double budget_x = left + bar_w * plan.budget_bytes / cap;
  s += fmt::format(
      "<line x1=\"{:.0f}\" y1=\"{}\" x2=\"{:.0f}\" y2=\"{}\" stroke=\"black\" "
      "stroke-dasharray=\"4,3\"/>\n</svg>\n",
      budget_x, bars_top - 4, budget_x, bars_top + num_stages * 26);
  return s;
}

}  // namespace moreh::planner
