// Tagged templates instead of JSX: htm turns html`<p>${x}</p>` into Preact's h() calls at run
// time, so the sources run as written (no compile step besides bundling).
import { h } from 'preact';
import htm from 'htm';

export const html = htm.bind(h);
