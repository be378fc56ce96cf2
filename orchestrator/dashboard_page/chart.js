// A small line chart drawn as SVG: no library, no CDN (the machine watching may have no internet).
'use strict';

const SVG_NS = 'http://www.w3.org/2000/svg';

function svgElement(name, attributes, text) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  if (text !== undefined) element.textContent = text;
  return element;
}

function shortNumber(value) {
  const size = Math.abs(value);
  if (size >= 1e6) return (value / 1e6).toFixed(1) + 'M';
  if (size >= 1e3) return (value / 1e3).toFixed(size >= 1e4 ? 0 : 1) + 'k';
  return size >= 100 || value === Math.round(value) ? value.toFixed(0) : value.toFixed(1);
}

/** Draws points [[x, y], ...] (y may be null: skipped) into `svg` (viewBox 480 x 160). */
function lineChart(svg, points, colour) {
  const width = 480, height = 160, left = 44, right = 8, top = 8, bottom = 22;
  svg.replaceChildren();
  const shown = points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  if (shown.length === 0) {
    svg.append(svgElement('text', { x: width / 2, y: height / 2, 'text-anchor': 'middle', class: 'empty' }, 'no data yet'));
    return;
  }
  const xs = shown.map((p) => p[0]), ys = shown.map((p) => p[1]);
  let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= 1; y1 += 1; }
  const sx = (x) => left + ((x - x0) / (x1 - x0)) * (width - left - right);
  const sy = (y) => top + (1 - (y - y0) / (y1 - y0)) * (height - top - bottom);
  svg.append(svgElement('line', { x1: left, y1: height - bottom, x2: width - right, y2: height - bottom, class: 'axis' }));
  svg.append(svgElement('line', { x1: left, y1: top, x2: left, y2: height - bottom, class: 'axis' }));
  svg.append(svgElement('text', { x: left - 4, y: top + 8, 'text-anchor': 'end' }, shortNumber(y1)));
  svg.append(svgElement('text', { x: left - 4, y: height - bottom, 'text-anchor': 'end' }, shortNumber(y0)));
  svg.append(svgElement('text', { x: left, y: height - 6 }, shortNumber(x0)));
  svg.append(svgElement('text', { x: width - right, y: height - 6, 'text-anchor': 'end' }, shortNumber(x1) + ' steps'));
  const path = shown.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' ');
  svg.append(svgElement('polyline', { points: path, fill: 'none', stroke: colour, 'stroke-width': 2 }));
  if (shown.length === 1) svg.append(svgElement('circle', { cx: sx(xs[0]), cy: sy(ys[0]), r: 3, fill: colour }));
}
