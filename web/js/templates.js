// example_workflows/index.json gives each template its title and description (the layout of core's
// templates/index.json). ComfyUI lists every .json of a pack's example_workflows/ as a template, that file
// too, and no released frontend reads it yet: without this file the Template Browser would show a card named
// "index" that opens nothing. This drops that one name from this pack's list, and nothing else.
import { api } from "../../../scripts/api.js";  // served at /extensions/<pack folder>/js/

// the pack's folder name, as ComfyUI names the pack in /workflow_templates (whatever the folder is called)
const PACK = decodeURIComponent(new URL(import.meta.url).pathname.split("/").slice(-3)[0]);
const INDEX = "index";

const listTemplates = api.getWorkflowTemplates?.bind(api);
if (listTemplates) {
  api.getWorkflowTemplates = async function () {
    const templates = await listTemplates();
    if (Array.isArray(templates?.[PACK])) {
      templates[PACK] = templates[PACK].filter((name) => name !== INDEX);
    }
    return templates;
  };
}
