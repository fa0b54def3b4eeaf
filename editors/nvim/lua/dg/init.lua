--- dg: the Neovim client of dg-lsp (ghost text, rewrite selection and fill holes from a local
--- diffusion language model). All the model logic lives in the server; see editors/README.md.
local M = {}

--- Merge `opts` with the defaults (once per session) and start the server for the configured filetypes.
---@param opts? {server?: table, ghost?: table, keys?: table}
function M.setup(opts)
  if vim.fn.has('nvim-0.10') ~= 1 then
    require('dg.config').notify('Neovim 0.10 or newer is needed', vim.log.levels.ERROR)
    return
  end
  local options = require('dg.config').setup(opts)
  if not options then
    return
  end
  local server = require('dg.server')
  local group = vim.api.nvim_create_augroup('dg', { clear = true })
  vim.api.nvim_create_autocmd('FileType', {
    group = group,
    pattern = options.server.filetypes,
    callback = function(ev) server.start(ev.buf) end,
  })
  vim.api.nvim_create_autocmd('LspProgress', {
    group = group,
    callback = function(ev)
      require('dg.status').on_progress(ev.data)
      vim.cmd.redrawstatus() -- statuslines showing M.statusline() follow the model load and long completions
    end,
  })
  for _, buf in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(buf) and vim.tbl_contains(options.server.filetypes, vim.bo[buf].filetype) then
      server.start(buf)
    end
  end
end

--- One line for a statusline: state, model, device and the last latency of the buffer's server.
function M.statusline(bufnr)
  return require('dg.status').summary(bufnr or vim.api.nvim_get_current_buf())
end

return M
